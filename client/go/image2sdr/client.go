// Package image2sdr is a thin typed Go client for the image2sdr.v1 service.
//
// It wraps the stubs that `make stubs` generates from protos/image2sdr/v1/image2sdr.proto
// (package image2sdrv1) with what every caller needs once: the bearer token on every call,
// a deadline per unary call, EncodeStream answers checked against the request order, and
// failed calls as *Error (the status code, its message and the fields a BadRequest names).
package image2sdr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	pb "github.com/image2sdr/image2sdr/gen/go/image2sdr/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Sdr is a sparse distributed representation: Size bits on Dimensions, the sorted Active positions.
type Sdr struct {
	Size       uint32   `json:"size"`
	Dimensions []uint32 `json:"dimensions"`
	Active     []uint32 `json:"active"`
}

// Encoding is one image encoded, or, in a stream, the in-band error of an item (Err set, Sdr nil).
type Encoding struct {
	RequestID string `json:"request_id"`
	Sdr       *Sdr   `json:"sdr,omitempty"`
	Indexed   bool   `json:"indexed"`
	Err       *Error `json:"error,omitempty"`
}

// Error is a failed call: its gRPC status code and message, and the fields a BadRequest detail names.
type Error struct {
	Code    codes.Code `json:"code"`
	Message string     `json:"message"`
	Fields  []string   `json:"fields"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Options shape a Client; the zero value is plaintext, no token, 30 s per unary call.
type Options struct {
	Token   string        // sent as "authorization: Bearer <token>" on every call
	Timeout time.Duration // per unary call; 0: 30 s
}

// Client is a connection to one image2sdr server.
type Client struct {
	conn    *grpc.ClientConn
	stub    pb.Image2SdrClient
	token   string
	timeout time.Duration
}

// Dial connects to address ("host:port") without TLS.
func Dial(address string, options Options) (*Client, error) {
	conn, err := grpc.Dial(address, grpc.WithInsecure())
	if err != nil {
		return nil, err
	}
	timeout := options.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	return &Client{conn: conn, stub: pb.NewImage2SdrClient(conn), token: options.Token, timeout: timeout}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Encode turns one image (its encoded bytes: JPEG, PNG, ...) into its SDR.
func (c *Client) Encode(ctx context.Context, image []byte) (*Sdr, error) {
	ctx, cancel := context.WithTimeout(c.outgoing(ctx), c.timeout)
	defer cancel()
	response, err := c.stub.Encode(ctx, &pb.EncodeRequest{Image: image})
	if err != nil {
		return nil, FromError(err)
	}
	return sdrFromPb(response.GetSdr()), nil
}

// EncodeStream sends every image over one stream (request ids "<prefix><i>") and returns the
// answers in request order; an answer out of order is an error, a refused item an Encoding with Err.
func (c *Client) EncodeStream(ctx context.Context, images [][]byte, prefix string) ([]Encoding, error) {
	ctx, cancel := context.WithCancel(c.outgoing(ctx))
	defer cancel()
	stream, err := c.stub.EncodeStream(ctx)
	if err != nil {
		return nil, FromError(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- send(stream, images, prefix) }()
	answers := make([]Encoding, 0, len(images))
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, FromError(err)
		}
		want := fmt.Sprintf("%s%d", prefix, len(answers))
		if response.GetRequestId() != want {
			return nil, fmt.Errorf("answers out of order: expected %q, got %q", want, response.GetRequestId())
		}
		answers = append(answers, encodingFromPb(response))
	}
	if err := <-sent; err != nil {
		return nil, FromError(err)
	}
	if len(answers) != len(images) {
		return nil, fmt.Errorf("the stream ended after %d answers to %d requests", len(answers), len(images))
	}
	return answers, nil
}

func send(stream pb.Image2Sdr_EncodeStreamClient, images [][]byte, prefix string) error {
	for i, image := range images {
		request := &pb.EncodeRequest{Image: image, RequestId: fmt.Sprintf("%s%d", prefix, i)}
		if err := stream.Send(request); err != nil {
			return err
		}
	}
	return stream.CloseSend()
}

// FromError turns a failed call's error into *Error (other errors are wrapped as codes.Unknown).
func FromError(err error) *Error {
	st, _ := status.FromError(err)
	return errorFromStatus(st)
}

func errorFromStatus(st *status.Status) *Error {
	result := &Error{Code: st.Code(), Message: st.Message(), Fields: []string{}}
	for _, detail := range st.Details() {
		if bad, ok := detail.(*errdetails.BadRequest); ok {
			for _, violation := range bad.GetFieldViolations() {
				result.Fields = append(result.Fields, violation.GetField())
			}
		}
	}
	return result
}

func (c *Client) outgoing(ctx context.Context) context.Context {
	if c.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
}

func sdrFromPb(message *pb.Sdr) *Sdr {
	return &Sdr{Size: message.GetSize(), Dimensions: message.GetDimensions(), Active: message.GetActive()}
}

func encodingFromPb(response *pb.EncodeResponse) Encoding {
	answer := Encoding{RequestID: response.GetRequestId(), Indexed: response.GetIndexed()}
	if response.GetError() != nil {
		answer.Err = errorFromStatus(status.FromProto(response.GetError()))
	} else {
		answer.Sdr = sdrFromPb(response.GetSdr())
	}
	return answer
}
