package io.image2sdr.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.util.ArrayList;
import java.util.List;

/** A failed call: its gRPC status code and message, and the fields a google.rpc.BadRequest detail names. */
public final class Image2SdrException extends Exception {
  private final transient Status.Code code;
  private final List<String> fields;

  Image2SdrException(Status.Code code, String message, List<String> fields) {
    super(message);
    this.code = code;
    this.fields = List.copyOf(fields);
  }

  public Status.Code code() {
    return code;
  }

  /** The request fields the server refused (empty when the status carries no BadRequest). */
  public List<String> fields() {
    return fields;
  }

  static Image2SdrException fromRpc(StatusRuntimeException exception) {
    com.google.rpc.Status status = StatusProto.fromThrowable(exception);
    Status grpcStatus = exception.getStatus();
    if (status == null) {
      return new Image2SdrException(grpcStatus.getCode(), String.valueOf(grpcStatus.getDescription()), List.of());
    }
    return fromStatus(status);
  }

  static Image2SdrException fromStatus(com.google.rpc.Status status) {
    List<String> fields = new ArrayList<>();
    for (Any detail : status.getDetailsList()) {
      if (detail.is(BadRequest.class)) {
        try {
          detail.unpack(BadRequest.class).getFieldViolationsList().forEach(v -> fields.add(v.getField()));
        } catch (InvalidProtocolBufferException garbled) {
          // A garbled detail must not hide the error it came with.
        }
      }
    }
    return new Image2SdrException(Status.fromCodeValue(status.getCode()).getCode(), status.getMessage(), fields);
  }
}
