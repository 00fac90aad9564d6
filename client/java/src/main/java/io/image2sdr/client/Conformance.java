package io.image2sdr.client;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Runs the conformance cases through the Java client and prints the outcome as JSON (tests/test_conformance.py
 * runs the same cases in Python, Node and Go): {@code Conformance ADDRESS TOKEN BAD_FILE IMAGE...}.
 */
public final class Conformance {
  private Conformance() {}

  public static void main(String[] args) throws Exception {
    if (args.length < 4) {
      System.err.println("usage: Conformance ADDRESS TOKEN BAD_FILE IMAGE...");
      System.exit(2);
    }
    byte[] bad = Files.readAllBytes(Path.of(args[2]));
    List<byte[]> images = new ArrayList<>();
    for (int i = 3; i < args.length; i++) {
      images.add(Files.readAllBytes(Path.of(args[i])));
    }
    Map<String, Object> outcome = new LinkedHashMap<>();
    try (Image2SdrClient client = Image2SdrClient.connect(args[0], args[1]);
        Image2SdrClient anonymous = Image2SdrClient.connect(args[0], null)) {
      List<Sdr> encoded = new ArrayList<>();
      for (byte[] image : images) {
        encoded.add(client.encode(image));
      }
      outcome.put("encode", encoded);
      List<Map<String, Object>> streamed = new ArrayList<>();
      for (Encoding answer : client.encodeStream(images, "stream-")) {
        Map<String, Object> entry = new LinkedHashMap<>();
        entry.put("request_id", answer.requestId());
        entry.put("sdr", answer.sdr());
        entry.put("indexed", answer.indexed());
        streamed.add(entry);
      }
      outcome.put("stream", streamed);
      outcome.put("bad_request", refusal(client, bad));
      outcome.put("no_token", refusal(anonymous, images.get(0)));
    }
    Gson gson = new GsonBuilder().serializeNulls().create();
    System.out.println(gson.toJson(outcome));
  }

  /** The error a call had to end with, as {code, message, fields}; null when it wrongly succeeded. */
  private static Map<String, Object> refusal(Image2SdrClient client, byte[] image) throws IOException {
    try {
      client.encode(image);
      return null;
    } catch (Image2SdrException refused) {
      Map<String, Object> error = new LinkedHashMap<>();
      error.put("code", refused.code().value());
      error.put("message", refused.getMessage());
      error.put("fields", refused.fields());
      return error;
    }
  }
}
