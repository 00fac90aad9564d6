package io.image2sdr.client;

/** One streamed image encoded ({@code sdr}), or the in-band error of an item ({@code error}, sdr null). */
public record Encoding(String requestId, Sdr sdr, boolean indexed, Image2SdrException error) {
  static Encoding fromProto(io.image2sdr.v1.EncodeResponse response) {
    if (response.hasError()) {
      return new Encoding(response.getRequestId(), null, false, Image2SdrException.fromStatus(response.getError()));
    }
    return new Encoding(response.getRequestId(), Sdr.fromProto(response.getSdr()), response.getIndexed(), null);
  }
}
