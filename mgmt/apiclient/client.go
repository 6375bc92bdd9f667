// Package apiclient calls keel's management API (the StorPool-compatible
// JSON API of keel_mgmt): GET|POST /ctrl/1.0/<Call>[/<arg>], replies
// {"generation":N,"data":...}, errors {"error":{"name","descr","transient"}}.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

var (
	// ErrUnreachable means no reply came from the API at all.
	ErrUnreachable = errors.New("management API unreachable")
)

// APIError is an error reply of the API.
type APIError struct {
	Status    int    `json:"-"`
	Name      string `json:"name"`
	Descr     string `json:"descr"`
	Transient bool   `json:"transient"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s: %s", e.Name, e.Descr)
}

// Client talks to the management API. It knows every mgmt node it was
// given and sends each request to the one that last answered, moving on
// to the next when a node cannot be reached: any node answers (writes are
// forwarded to the leader), so losing one mgmt node loses no caller.
type Client struct {
	// BaseURL is the node requests go to first (e.g. http://127.0.0.1:8081).
	BaseURL string
	// Others are further nodes, tried in turn when BaseURL cannot be
	// reached.
	Others []string
	Token  string
	HTTP   *http.Client
	mu     sync.Mutex // guards BaseURL and Others across concurrent calls
	// Prefix selects the variant: "" for this cluster, "MultiCluster/" or
	// "RemoteCommand/<cluster>/".
	Prefix string
}

// New returns a client with a sane timeout. baseURLs is one URL or a
// comma-separated list of the mgmt nodes' URLs.
func New(baseURLs, token string) *Client {
	var urls []string
	for _, u := range strings.Split(baseURLs, ",") {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		urls = []string{""}
	}
	return &Client{BaseURL: urls[0], Others: urls[1:], Token: token, HTTP: &http.Client{Timeout: 60 * time.Second, Transport: transport}}
}

// transport is shared by every Client of a process. It keeps more idle
// connections per mgmt node than http.DefaultTransport's two: a storage
// server polls and registers each of its disks at once; of each round's
// connections only two were kept, the others closed after use and opened
// anew the next round, so the demo's servers opened about five
// connections a second, leaving hundreds in TIME-WAIT.
var transport = func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	return t
}()

// ReadToken reads an API token file (one line).
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read API token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("read API token: %s is empty", path)
	}
	return tok, nil
}

// Reply is the envelope of a successful reply.
type Reply struct {
	Generation int64           `json:"generation"`
	Data       json.RawMessage `json:"data"`
	OK         bool            `json:"ok"`
	Info       json.RawMessage `json:"info"`
	Error      *APIError       `json:"error"`
}

// Get calls a read call; args (may be nil) travel in ?json=. The data field
// of the reply is decoded into out (may be nil).
func (c *Client) Get(ctx context.Context, call string, args any, out any) (*Reply, error) {
	path := "/ctrl/1.0/" + c.Prefix + escapePath(call)
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", call, err)
		}
		path += "?json=" + url.QueryEscape(string(b))
	}
	return c.each(call, false, func(base string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	}, out)
}

// each sends the request built for each node in turn, starting with
// BaseURL, until one answers; the node that answered becomes BaseURL. A
// read moves on after any transport error; a write only when the node
// could not be connected to, since a write whose connection broke later
// may have been applied.
func (c *Client) each(call string, write bool, build func(base string) (*http.Request, error), out any) (*Reply, error) {
	c.mu.Lock()
	nodes := append([]string{c.BaseURL}, c.Others...)
	c.mu.Unlock()
	var last error
	for i, base := range nodes {
		req, err := build(base)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", call, err)
		}
		r, err := c.do(req, call, out)
		var op *net.OpError
		switch {
		case err == nil && i > 0:
			c.mu.Lock()
			c.BaseURL, c.Others = base, append(append([]string{}, nodes[i+1:]...), nodes[:i]...)
			c.mu.Unlock()
		case errors.Is(err, ErrUnreachable) && (!write || errors.As(err, &op) && op.Op == "dial"):
			last = err
			continue
		}
		return r, err
	}
	return nil, last
}

// Post calls a write call with a JSON body; the reply's data (or, for
// calls that answer {"ok":true,"info":...}, info) is decoded into out.
func (c *Client) Post(ctx context.Context, call string, body any, out any) (*Reply, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", call, err)
		}
		rd = bytes.NewReader(b)
	}
	path := "/ctrl/1.0/" + c.Prefix + escapePath(call)
	return c.each(call, true, func(base string) (*http.Request, error) {
		if s, ok := rd.(io.Seeker); ok {
			s.Seek(0, io.SeekStart)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, rd)
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, err
	}, out)
}

func (c *Client) do(req *http.Request, call string, out any) (*Reply, error) {
	if c.Token != "" {
		req.Header.Set("Authorization", "Storpool v1:"+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", call, ErrUnreachable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: read reply: %w", call, err)
	}
	var r Reply
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: HTTP %d, reply is not JSON: %.200s", call, resp.StatusCode, b)
	}
	if r.Error != nil {
		r.Error.Status = resp.StatusCode
		return &r, r.Error
	}
	if resp.StatusCode/100 != 2 {
		return &r, &APIError{Status: resp.StatusCode, Name: "httpError", Descr: resp.Status}
	}
	if out != nil {
		src := r.Data
		// A write's data is {"ok":true,"generation":N,"info":...}: what
		// the caller wants is the info.
		var ok struct {
			OK   bool            `json:"ok"`
			Info json.RawMessage `json:"info"`
		}
		if r.OK && len(src) > 0 && src[0] == '{' && json.Unmarshal(src, &ok) == nil && ok.OK {
			src = ok.Info
		}
		if len(src) == 0 || string(src) == "null" {
			src = r.Info
		}
		if len(src) > 0 {
			if err := json.Unmarshal(src, out); err != nil {
				return &r, fmt.Errorf("%s: decode reply: %w", call, err)
			}
		}
	}
	return &r, nil
}

// escapePath escapes each segment of "Call/arg": names may hold '#'
// (volumes being deleted) or '?', which would otherwise end the path.
func escapePath(call string) string {
	parts := strings.Split(call, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}
