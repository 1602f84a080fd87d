package main

import (
	"context"
	"fmt"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
	"google.golang.org/grpc"
)

// Every list of the admin API answers a page at a time (at most 1000
// items); the list commands ask for page after page on one connection
// until the collector says there is no next page or --limit is reached,
// and print one table, CSV or JSON document of them all, as one answer
// used to be. The output is printed once the last page is in, so that a
// failure half-way prints no partial list, and a table's columns fit
// every row.

// Page sizes the CLI asks for.
const (
	maxPageSize = 1000 // the most the collector answers in one page
)

// pagedList is a list request: its page fields.
type pagedList interface {
	GetPageToken() string
}

// pageSize is the --page-size flag: items per request (default and at most
// maxPageSize).
func (inv *invocation) pageSize() (int, error) {
	if !inv.opts.pageSize.set {
		return maxPageSize, nil
	}
	n, err := parseCount(inv, "page-size", inv.opts.pageSize.v, 1, maxPageSize)
	return int(n), err
}

// pageRequest is how many items to ask for next: the page size, or fewer
// when only that many remain below limit (0: no limit).
func pageRequest(size, limit, have int) uint32 {
	if limit > 0 && limit-have < size {
		return uint32(limit - have)
	}
	return uint32(size)
}

// walkPages asks for a list page after page on one connection. prepare
// sets the request's page token and size before each request ("" for the
// first page); page takes an answer and says whether it wants more; next
// is the answer's next_page_token. A collector that answers a token it
// gave before would loop for ever: that is an error.
func walkPages[Req pagedList, Resp any](ctx context.Context, inv *invocation, what string,
	rpc func(mnguardv1.AdminServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req,
	prepare func(token string), next func(Resp) string, page func(Resp) (more bool)) error {
	c, err := inv.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	seen := map[string]bool{}
	token := ""
	for n := 1; ; n++ {
		prepare(token)
		resp, err := call(ctx, c, what, func(ctx context.Context, r Req, opts ...grpc.CallOption) (Resp, error) {
			return rpc(c.client, ctx, r, opts...)
		}, req)
		if err != nil {
			if n > 1 {
				return fmt.Errorf("%w (page %d)", err, n)
			}
			return err
		}
		if !page(resp) {
			return nil
		}
		token = next(resp)
		if token == "" {
			return nil
		}
		if seen[token] {
			return fmt.Errorf("%s: the server answered a page token of an earlier page (page %d): stopped", what, n)
		}
		seen[token] = true
	}
}

// collectPages asks for every page of a list (up to limit items; 0: all)
// and returns the items in order. items reads a page's items.
func collectPages[Req pagedList, Resp any, T any](ctx context.Context, inv *invocation, what string,
	rpc func(mnguardv1.AdminServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req,
	setPage func(token string, size uint32), next func(Resp) string, items func(Resp) []T, limit int) ([]T, Resp, error) {
	var (
		all  []T
		last Resp
	)
	size, err := inv.pageSize()
	if err != nil {
		return nil, last, err
	}
	err = walkPages(ctx, inv, what, rpc, req, func(token string) {
		setPage(token, pageRequest(size, limit, len(all)))
	}, next, func(r Resp) bool {
		last = r
		all = append(all, items(r)...)
		if limit > 0 && len(all) >= limit {
			all = all[:limit]
			return false
		}
		return true
	})
	return all, last, err
}
