package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"keel/mgmt/apiclient"
)

func TestParseService(t *testing.T) {
	for _, in := range []string{"mgmt", "keel_mgmt", "keel_mgmt.service", "storpool_mgmt", "storpool_mgmt.service"} {
		s, err := ParseService(in)
		if err != nil || s != (Service{Role: "mgmt", Unit: "keel_mgmt.service"}) {
			t.Errorf("ParseService(%q) = %+v, %v", in, s, err)
		}
	}
	if s, err := ParseService("disk_tester"); err != nil || s.Unit != "keel_disk_tester.service" {
		t.Errorf("disk_tester: %+v %v", s, err)
	}
	for _, in := range []string{"", "keel_", ".service", "keel_x@.service", "Mgmt", "a b", "../x", "-x", "keel_x@y", strings.Repeat("a", 65)} {
		if s, err := ParseService(in); !errors.Is(err, ErrBadName) {
			t.Errorf("ParseService(%q) = %+v, %v; want ErrBadName", in, s, err)
		}
	}
}

func TestStartOrder(t *testing.T) {
	var in []Service
	for _, r := range []string{"stat", "iscsi", "client", "server", "mgmt", "bridge", "nvmed", "client"} {
		s, _ := ParseService(r)
		in = append(in, s)
	}
	roles := func(ss []Service) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Role)
		}
		return out
	}
	if got, want := roles(StartOrder(in)), []string{"mgmt", "server", "bridge", "client", "iscsi", "nvmed", "stat"}; !reflect.DeepEqual(got, want) {
		t.Errorf("StartOrder = %v, want %v", got, want)
	}
	if got, want := roles(StopOrder(in)), []string{"stat", "nvmed", "iscsi", "client", "bridge", "server", "mgmt"}; !reflect.DeepEqual(got, want) {
		t.Errorf("StopOrder = %v, want %v", got, want)
	}
}

// AskMgmt against a real HTTP server speaking the API's envelope: the call,
// the token and the verdict's fields, and errors.
func TestAskMgmt(t *testing.T) {
	verdict := StopVerdict{Safe: false, Reason: "disk 301 holds the last up copy of volume vm1", Maintenance: true}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ctrl/1.0/NodeStopCheck/3" || r.Header.Get("Authorization") != "Storpool v1:tok" {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"name": "invalidParam", "descr": r.URL.Path}})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"generation": 7, "data": verdict})
	}))
	defer srv.Close()
	got, err := AskMgmt(context.Background(), apiclient.New(srv.URL, "tok"), 3)
	if err != nil || got != verdict {
		t.Fatalf("AskMgmt = %+v, %v; want %+v", got, err, verdict)
	}
	if _, err := AskMgmt(context.Background(), apiclient.New(srv.URL, "tok"), 4); err == nil {
		t.Fatal("an API error reply must be an error")
	}
	srv.Close()
	if _, err := AskMgmt(context.Background(), apiclient.New(srv.URL, "tok"), 3); !errors.Is(err, apiclient.ErrUnreachable) {
		t.Fatalf("closed server: %v, want ErrUnreachable", err)
	}
}

func TestExitText(t *testing.T) {
	for _, tt := range []struct {
		code, status int32
		at           uint64
		want         string
	}{
		{0, 0, 0, "-"},
		{1, 0, 5, "exited 0"},
		{1, 2, 5, "exited 2"},
		{2, 9, 5, "killed by signal 9 (killed)"},
		{3, 11, 5, "dumped core on signal 11 (segmentation fault)"},
	} {
		if got := exitText(tt.code, tt.status, tt.at); got != tt.want {
			t.Errorf("exitText(%d, %d) = %q, want %q", tt.code, tt.status, got, tt.want)
		}
	}
}

// FuzzParseService: any argument either names a unit keel_<role>.service
// that parses back to itself, or is ErrBadName.
func FuzzParseService(f *testing.F) {
	for _, s := range []string{"mgmt", "keel_server.service", "storpool_client", "x@y", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseService(in)
		if err != nil {
			if !errors.Is(err, ErrBadName) {
				t.Fatalf("%q: %v", in, err)
			}
			return
		}
		if !strings.HasPrefix(s.Unit, "keel_") || !strings.HasSuffix(s.Unit, ".service") || strings.ContainsAny(s.Unit, "/@ \n") {
			t.Fatalf("%q gave unit %q", in, s.Unit)
		}
		again, err := ParseService(s.Unit)
		if err != nil || again != s {
			t.Fatalf("%q: unit %q parses to %+v, %v", in, s.Unit, again, err)
		}
	})
}
