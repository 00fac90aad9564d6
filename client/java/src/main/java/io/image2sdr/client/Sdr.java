package io.image2sdr.client;

import java.util.List;

/** A sparse distributed representation: {@code size} bits on {@code dimensions}, the sorted active positions. */
public record Sdr(int size, List<Integer> dimensions, List<Integer> active) {
  static Sdr fromProto(io.image2sdr.v1.Sdr message) {
    return new Sdr(message.getSize(), List.copyOf(message.getDimensionsList()), List.copyOf(message.getActiveList()));
  }
}
