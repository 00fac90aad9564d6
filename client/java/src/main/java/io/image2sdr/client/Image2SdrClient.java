package io.image2sdr.client;

import com.google.protobuf.ByteString;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import io.image2sdr.v1.EncodeRequest;
import io.image2sdr.v1.EncodeResponse;
import io.image2sdr.v1.Image2SdrGrpc;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

/**
 * A thin typed client for image2sdr.v1 over the stubs {@code make stubs} generates: the bearer token on every
 * call, a deadline per unary call, EncodeStream answers checked against the request order, and failed calls as
 * {@link Image2SdrException}.
 */
public final class Image2SdrClient implements AutoCloseable {
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private final ManagedChannel channel;
  private final Image2SdrGrpc.Image2SdrBlockingStub blocking;
  private final Image2SdrGrpc.Image2SdrStub async;
  private final long timeoutSeconds;

  private Image2SdrClient(ManagedChannel channel, String token, long timeoutSeconds) {
    this.channel = channel;
    Image2SdrGrpc.Image2SdrBlockingStub blockingStub = Image2SdrGrpc.newBlockingStub(channel);
    Image2SdrGrpc.Image2SdrStub asyncStub = Image2SdrGrpc.newStub(channel);
    if (token != null && !token.isEmpty()) {
      Metadata headers = new Metadata();
      headers.put(AUTHORIZATION, "Bearer " + token);
      blockingStub = blockingStub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
      asyncStub = asyncStub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
    }
    this.blocking = blockingStub;
    this.async = asyncStub;
    this.timeoutSeconds = timeoutSeconds;
  }

  /** Connects to {@code target} ("host:port") without TLS; {@code token} may be null. */
  public static Image2SdrClient connect(String target, String token) {
    return new Image2SdrClient(ManagedChannelBuilder.forTarget(target).usePlaintext().build(), token, 30);
  }

  /** One image (its encoded bytes: JPEG, PNG, ...) to its SDR. */
  public Sdr encode(byte[] image) throws Image2SdrException {
    EncodeRequest request = EncodeRequest.newBuilder().setImage(ByteString.copyFrom(image)).build();
    try {
      return Sdr.fromProto(blocking.withDeadlineAfter(timeoutSeconds, TimeUnit.SECONDS).encode(request).getSdr());
    } catch (StatusRuntimeException exception) {
      throw Image2SdrException.fromRpc(exception);
    }
  }

  /** Every image over one stream (request ids "prefix + i"), answered in request order; a refused item carries its error. */
  public List<Encoding> encodeStream(List<byte[]> images, String prefix) throws Image2SdrException {
    List<Encoding> answers = new ArrayList<>();
    CompletableFuture<Void> done = new CompletableFuture<>();
    StreamObserver<EncodeRequest> requests = async.encodeStream(new StreamObserver<EncodeResponse>() {
      @Override
      public void onNext(EncodeResponse response) {
        answers.add(Encoding.fromProto(response));
      }

      @Override
      public void onError(Throwable error) {
        done.completeExceptionally(error);
      }

      @Override
      public void onCompleted() {
        done.complete(null);
      }
    });
    for (int i = 0; i < images.size(); i++) {
      ByteString image = ByteString.copyFrom(images.get(i));
      requests.onNext(EncodeRequest.newBuilder().setImage(image).setRequestId(prefix + i).build());
    }
    requests.onCompleted();
    try {
      done.get();
    } catch (ExecutionException failed) {
      if (failed.getCause() instanceof StatusRuntimeException exception) {
        throw Image2SdrException.fromRpc(exception);
      }
      throw new IllegalStateException(failed.getCause());
    } catch (InterruptedException interrupted) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException(interrupted);
    }
    for (int i = 0; i < answers.size(); i++) {
      if (!answers.get(i).requestId().equals(prefix + i)) {
        throw new IllegalStateException("answers out of order: expected " + prefix + i + ", got " + answers.get(i).requestId());
      }
    }
    if (answers.size() != images.size()) {
      throw new IllegalStateException("the stream ended after " + answers.size() + " answers to " + images.size());
    }
    return answers;
  }

  @Override
  public void close() throws InterruptedException {
    channel.shutdown().awaitTermination(5, TimeUnit.SECONDS);
  }
}
