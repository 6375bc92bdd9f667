package node

// Version and Commit are stamped by the build (make build sets them with
// -ldflags -X); a plain `go build` leaves these markers.
var (
	Version = "dev"
	Commit  = "unknown"
)
