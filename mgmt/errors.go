// Package mgmt is keel's control plane: the replicated cluster store (a
// stateless command applier over SQLite, wrapped by a Raft FSM), the
// StorPool-compatible JSON API, and the allocator of disk sets.
package mgmt

import (
	"errors"
	"fmt"
	"net/http"
)

// Error names of the API (docs/API.md).
const (
	ErrInvalidParam  = "invalidParam"
	ErrInvalidJSON   = "invalidJSON"
	ErrAuth          = "authError"
	ErrInvalidCall   = "invalidCall"
	ErrNotFound      = "objectDoesNotExist"
	ErrExists        = "objectExists"
	ErrInUse         = "objectInUse"
	ErrInsufficient  = "insufficientResources"
	ErrNotAllowed    = "notAllowed"
	ErrNoLeader      = "noLeader"
	ErrNotReady      = "notReady"
	ErrInternalError = "internalError"
)

var (
	// ErrBadSecret means a Raft peer did not prove the cluster secret.
	ErrBadSecret = errors.New("peer does not know the cluster secret")
	// ErrNotInitialised means the node has no cluster identity yet.
	ErrNotInitialised = errors.New("cluster not initialised; run keel cluster init or keel cluster join")
)

// Error is an API error: a name from the list above and a description for
// the operator.
type Error struct {
	Name      string `json:"name"`
	Descr     string `json:"descr"`
	Transient bool   `json:"transient"`
}

func (e *Error) Error() string { return e.Name + ": " + e.Descr }

// Status is the HTTP status the error is sent with.
func (e *Error) Status() int {
	switch e.Name {
	case ErrInvalidParam, ErrInvalidJSON:
		return http.StatusBadRequest
	case ErrAuth:
		return http.StatusUnauthorized
	case ErrInvalidCall, ErrNotFound:
		return http.StatusNotFound
	case ErrExists, ErrInUse, ErrInsufficient, ErrNotAllowed:
		return http.StatusConflict
	case ErrNoLeader, ErrNotReady:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

func invalidParam(field, format string, args ...any) *Error {
	return &Error{Name: ErrInvalidParam, Descr: field + ": " + fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *Error {
	return &Error{Name: ErrNotFound, Descr: fmt.Sprintf(format, args...)}
}

func apiErr(name, format string, args ...any) *Error {
	return &Error{Name: name, Descr: fmt.Sprintf(format, args...)}
}
