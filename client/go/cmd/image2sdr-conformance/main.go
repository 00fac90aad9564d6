// Command image2sdr-conformance runs the conformance cases through the Go client and prints
// the outcome as JSON (tests/test_conformance.py runs the same cases in Python, Node and Java):
//
//	image2sdr-conformance ADDRESS TOKEN BAD_FILE IMAGE...
//
// encode: each IMAGE's SDR; stream: every IMAGE over one EncodeStream (ids "stream-<i>");
// bad_request: Encode of BAD_FILE's bytes; no_token: Encode of the first IMAGE without the token.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/image2sdr/image2sdr/client/go/image2sdr"
)

type outcome struct {
	Encode     []*image2sdr.Sdr     `json:"encode"`
	Stream     []image2sdr.Encoding `json:"stream"`
	BadRequest *image2sdr.Error     `json:"bad_request"`
	NoToken    *image2sdr.Error     `json:"no_token"`
}

func main() {
	if len(os.Args) < 5 {
		fmt.Fprintln(os.Stderr, "usage: image2sdr-conformance ADDRESS TOKEN BAD_FILE IMAGE...")
		os.Exit(2)
	}
	result, err := run(os.Args[1], os.Args[2], os.Args[3], os.Args[4:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(result); err != nil {
		os.Exit(1)
	}
}

func run(address, token, badFile string, files []string) (*outcome, error) {
	images, err := readAll(append([]string{badFile}, files...))
	if err != nil {
		return nil, err
	}
	bad, images := images[0], images[1:]
	ctx := context.Background()
	client, err := image2sdr.Dial(address, image2sdr.Options{Token: token})
	if err != nil {
		return nil, err
	}
	defer client.Close()
	anonymous, err := image2sdr.Dial(address, image2sdr.Options{})
	if err != nil {
		return nil, err
	}
	defer anonymous.Close()

	result := &outcome{}
	for _, image := range images {
		sdr, err := client.Encode(ctx, image)
		if err != nil {
			return nil, err
		}
		result.Encode = append(result.Encode, sdr)
	}
	if result.Stream, err = client.EncodeStream(ctx, images, "stream-"); err != nil {
		return nil, err
	}
	result.BadRequest = refusal(client.Encode(ctx, bad))
	result.NoToken = refusal(anonymous.Encode(ctx, images[0]))
	return result, nil
}

// refusal is the error a call had to end with (nil when it wrongly succeeded).
func refusal(_ *image2sdr.Sdr, err error) *image2sdr.Error {
	if err == nil {
		return nil
	}
	return err.(*image2sdr.Error)
}

func readAll(files []string) ([][]byte, error) {
	contents := make([][]byte, 0, len(files))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		contents = append(contents, data)
	}
	return contents, nil
}
