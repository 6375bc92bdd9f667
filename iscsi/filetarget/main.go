// Command filetarget serves one plain file as LUN 0 of an iSCSI target on
// a loopback port. It is the test backend of keel's iSCSI target, used by
// scripts/bench.d/iscsi.sh and for manual runs of libiscsi's tools; keel
// volumes are served by keel_iscsi (iscsi.Controller).
//
//	go run ./iscsi/filetarget -file /tmp/lun.img -listen 127.0.0.1:3260
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"keel/iscsi"
	"keel/scsi"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "filetarget:", err)
		os.Exit(1)
	}
}

func run() error {
	file := flag.String("file", "", "backing file (its size is the LUN's size)")
	listen := flag.String("listen", "127.0.0.1:3260", "loopback address to listen on")
	iqn := flag.String("iqn", "iqn.2024-01.io.keel:filetarget", "target name")
	bs := flag.Uint("block-size", 512, "logical block size (512 or 4096)")
	prFile := flag.String("pr-file", "", "where persistent reservations are kept (default: FILE.pr)")
	verbose := flag.Bool("v", false, "log logins and connection errors")
	flag.Parse()
	if *file == "" {
		return fmt.Errorf("-file is required")
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen %s: the test backend listens on loopback only", *listen)
	}
	be, err := scsi.OpenFileBackend(*file, uint32(*bs))
	if err != nil {
		return err
	}
	defer be.Close()
	if *prFile == "" {
		*prFile = *file + ".pr"
	}
	lu, err := scsi.NewLU(be, scsi.LUOptions{Name: *iqn, Store: scsi.FilePRStore(*prFile)})
	if err != nil {
		return err
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv := iscsi.NewServer(iscsi.Config{Targets: []*iscsi.Target{{Name: *iqn, LUs: map[uint64]*scsi.LU{0: lu}}}, Log: log})
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s %s\n", l.Addr(), *iqn)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); srv.Close() }()
	return srv.Serve(l)
}
