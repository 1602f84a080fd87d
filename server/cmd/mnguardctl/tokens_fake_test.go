package main

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func (c directClient) ListTokens(ctx context.Context, in *mnguardv1.ListTokensRequest, _ ...grpc.CallOption) (*mnguardv1.ListTokensResponse, error) {
	return c.s.ListTokens(ctx, in)
}

func (c directClient) AssignToken(ctx context.Context, in *mnguardv1.AssignTokenRequest, _ ...grpc.CallOption) (*mnguardv1.AssignTokenResponse, error) {
	return c.s.AssignToken(ctx, in)
}

// ImportTokens runs the server's handler in a goroutine and passes the
// messages through a channel, as a client stream would.
func (c directClient) ImportTokens(ctx context.Context, _ ...grpc.CallOption) (grpc.ClientStreamingClient[mnguardv1.ImportTokensRequest, mnguardv1.ImportTokensResponse], error) {
	ctx, cancel := context.WithCancel(ctx)
	s := &directImport{ctx: ctx, cancel: cancel, msgs: make(chan *mnguardv1.ImportTokensRequest), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = c.s.ImportTokens(&directImportServer{s})
		cancel()
	}()
	return s, nil
}

type directImport struct {
	ctx    context.Context
	cancel context.CancelFunc
	msgs   chan *mnguardv1.ImportTokensRequest
	done   chan struct{}
	resp   *mnguardv1.ImportTokensResponse
	err    error
	closed bool
}

func (s *directImport) Send(m *mnguardv1.ImportTokensRequest) error {
	select {
	case s.msgs <- m:
		return nil
	case <-s.done:
		return io.EOF // as grpc: the error comes from CloseAndRecv
	}
}

func (s *directImport) CloseAndRecv() (*mnguardv1.ImportTokensResponse, error) {
	if !s.closed {
		s.closed = true
		close(s.msgs)
	}
	<-s.done
	return s.resp, s.err
}

func (s *directImport) Header() (metadata.MD, error) { return nil, nil }
func (s *directImport) Trailer() metadata.MD         { return nil }
func (s *directImport) CloseSend() error             { return errors.New("use CloseAndRecv") }
func (s *directImport) Context() context.Context     { return s.ctx }
func (s *directImport) SendMsg(any) error            { return errors.New("use Send") }
func (s *directImport) RecvMsg(any) error            { return errors.New("use CloseAndRecv") }

// directImportServer is the server's side of a directImport.
type directImportServer struct{ c *directImport }

func (s *directImportServer) Recv() (*mnguardv1.ImportTokensRequest, error) {
	select {
	case m, ok := <-s.c.msgs:
		if !ok {
			return nil, io.EOF
		}
		return m, nil
	case <-s.c.ctx.Done():
		return nil, s.c.ctx.Err()
	}
}

func (s *directImportServer) SendAndClose(r *mnguardv1.ImportTokensResponse) error {
	s.c.resp = r
	return nil
}

func (s *directImportServer) SetHeader(metadata.MD) error  { return nil }
func (s *directImportServer) SendHeader(metadata.MD) error { return nil }
func (s *directImportServer) SetTrailer(metadata.MD)       {}
func (s *directImportServer) Context() context.Context     { return s.c.ctx }
func (s *directImportServer) SendMsg(any) error            { return errors.New("use SendAndClose") }
func (s *directImportServer) RecvMsg(any) error            { return errors.New("use Recv") }
