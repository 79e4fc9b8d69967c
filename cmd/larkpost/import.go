package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/larkpost/larkpost/rules/postfix/importer"
)

// Exit statuses of larkpost import.
const (
	importOK       = 0 // everything converted
	importFailed   = 1 // could not import
	importUsage    = 2
	importHandWork = 3 // written, but the report lists hand work
)

func runImport(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("import", stderr)
	out := fs.String("o", "larkpost-from-postfix", "write the config folder to `OUTDIR`")
	force := fs.Bool("force", false, "write into a non-empty OUTDIR, overwriting its files")
	if code, ok := parseFlags(fs, interleaved(args, fs.Lookup), stdout, stderr); !ok {
		return code
	}
	rest := fs.Args()
	if len(rest) == 0 || rest[0] != "postfix" {
		what := "nothing"
		if len(rest) > 0 {
			what = fmt.Sprintf("%q", rest[0])
		}
		fmt.Fprintf(stderr, "larkpost import: want a source system, got %s; usage: larkpost import postfix [DIR] [-o OUTDIR] [--force]\n", what)
		return importUsage
	}
	if extraArgs("import", rest, 2, stderr) {
		return importUsage
	}
	dir := "/etc/postfix"
	if len(rest) == 2 {
		dir = rest[1]
	}
	if *out == "" {
		fmt.Fprintln(stderr, "larkpost import: -o needs a folder")
		return importUsage
	}
	if ents, err := os.ReadDir(*out); err == nil && len(ents) > 0 && !*force {
		fmt.Fprintf(stderr, "larkpost import: %s is not empty: refusing to overwrite it (use --force, or choose another folder with -o)\n", *out)
		return importUsage
	}
	v := version
	if v == "" {
		v = "(devel)"
	}
	res, err := importer.Import(importer.Options{Dir: dir, OutDir: *out, Version: v, Now: time.Now()})
	if err != nil {
		fmt.Fprintf(stderr, "larkpost import: %v\n", err)
		return importFailed
	}
	if err := res.Write(*out, *force); err != nil {
		if errors.Is(err, importer.ErrNotEmpty) {
			fmt.Fprintf(stderr, "larkpost import: %v\n", err)
			return importUsage
		}
		fmt.Fprintf(stderr, "larkpost import: %v\n", err)
		return importFailed
	}
	stdout.Write(res.Report)
	fmt.Fprintf(stdout, "\nwrote %s/larkpost.star, %s/postfix_import_test.star and %s/IMPORT-REPORT.md\n", *out, *out, *out)
	fmt.Fprintf(stdout, "next: larkpost check -c %s/larkpost.star && larkpost test -c %s/larkpost.star %s/postfix_import_test.star\n", *out, *out, *out)
	if res.NeedsHandWork() {
		return importHandWork
	}
	return importOK
}
