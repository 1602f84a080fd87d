package seeds

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// XML limits, on top of the caller's bound on the input size.
const (
	maxXMLDepth = 32     // nesting below a KeyContainer child
	maxXMLNodes = 10_000 // elements in one KeyContainer child
)

// node is an element of a small XML tree: the decoder builds one for each
// child of the KeyContainer, so memory stays bounded by one KeyPackage.
type node struct {
	name     xml.Name
	attr     []xml.Attr
	text     []byte
	children []*node
}

// readNode reads the element that start opened, down to its end element.
func readNode(d *xml.Decoder, start xml.StartElement, depth int, nodes *int) (*node, error) {
	n := &node{name: start.Name, attr: start.Attr}
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth >= maxXMLDepth {
				return nil, fmt.Errorf("elements nested deeper than %d", maxXMLDepth)
			}
			if *nodes++; *nodes > maxXMLNodes {
				return nil, fmt.Errorf("more than %d elements", maxXMLNodes)
			}
			c, err := readNode(d, t.Copy(), depth+1, nodes)
			if err != nil {
				return nil, err
			}
			n.children = append(n.children, c)
		case xml.CharData:
			if len(n.text)+len(t) > MaxFieldBytes {
				return nil, fmt.Errorf("<%s> text longer than %d bytes", n.name.Local, MaxFieldBytes)
			}
			n.text = append(n.text, t...)
		case xml.EndElement:
			return n, nil
		}
	}
}

// is reports whether n is the element space:local.
func (n *node) is(space, local string) bool {
	return n.name.Space == space && n.name.Local == local
}

// child returns the only child space:local of n, nil if there is none, or
// an error if there are several. An empty space matches any namespace.
func (n *node) child(space, local string) (*node, error) {
	if n == nil {
		return nil, nil
	}
	var found *node
	for _, c := range n.children {
		if c.name.Local != local || (space != "" && c.name.Space != space) {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("<%s> appears twice in <%s>", local, n.name.Local)
		}
		found = c
	}
	return found, nil
}

// path follows child elements of the PSKC namespace.
func (n *node) path(locals ...string) (*node, error) {
	var err error
	for _, l := range locals {
		if n, err = n.child(nsPSKC, l); err != nil || n == nil {
			return nil, err
		}
	}
	return n, nil
}

// value is the trimmed text of n, or "" for a nil node.
func (n *node) value() string {
	if n == nil {
		return ""
	}
	return strings.TrimSpace(string(n.text))
}

// attrValue returns the unqualified attribute local of n.
func (n *node) attrValue(local string) string {
	if n == nil {
		return ""
	}
	for _, a := range n.attr {
		if a.Name.Space == "" && a.Name.Local == local {
			return strings.TrimSpace(a.Value)
		}
	}
	return ""
}

// childrenOrNil returns n's children; nil for a nil node.
func (n *node) childrenOrNil() []*node {
	if n == nil {
		return nil
	}
	return n.children
}
