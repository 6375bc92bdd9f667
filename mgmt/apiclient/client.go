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
	"net/http"
	"net/url"
	"os"
	"strings"
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

// Client talks to one API endpoint.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:8081
	Token   string
	HTTP    *http.Client
	// Prefix selects the variant: "" for this cluster, "MultiCluster/" or
	// "RemoteCommand/<cluster>/".
	Prefix string
}

// New returns a client with a sane timeout.
func New(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, HTTP: &http.Client{Timeout: 60 * time.Second}}
}

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
	u := c.BaseURL + "/ctrl/1.0/" + c.Prefix + escapePath(call)
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", call, err)
		}
		u += "?json=" + url.QueryEscape(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", call, err)
	}
	return c.do(req, call, out)
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+"/ctrl/1.0/"+c.Prefix+escapePath(call), rd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", call, err)
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, call, out)
}

func (c *Client) do(req *http.Request, call string, out any) (*Reply, error) {
	if c.Token != "" {
		req.Header.Set("Authorization", "Storpool v1:"+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", call, ErrUnreachable, err)
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
