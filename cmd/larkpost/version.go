package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// version is set at release builds with -ldflags "-X main.version=v1.2.3".
// Left empty, the module version of the build info is printed.
var version = ""

func runVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && isHelpArg(args[0]) {
		fmt.Fprintln(stdout, "usage: larkpost "+verbs["version"].usage)
		return 0
	}
	if extraArgs("version", args, 0, stderr) {
		return 2
	}
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprintln(stdout, versionLine(version, bi))
	return 0
}

// versionLine is "larkpost VERSION [REVISION[+dirty] [TIME]] (GOVERSION)":
// the version set at link time, else the module version from the build
// info, with the VCS revision it was built from. "(devel)" is printed
// only when none of these is known.
func versionLine(linked string, bi *debug.BuildInfo) string {
	if bi == nil {
		if linked == "" {
			linked = "(devel)"
		}
		return "larkpost " + linked
	}
	v := linked
	if v == "" {
		v = bi.Main.Version // "(devel)" for a build in the module's own tree
	}
	var rev, when, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
			if len(rev) > 12 {
				rev = rev[:12]
			}
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	out := "larkpost"
	switch {
	case v != "" && v != "(devel)":
		out += " " + v
	case rev == "":
		out += " (devel)"
	}
	if rev != "" {
		out += " " + rev + dirty
		if when != "" {
			out += " " + when
		}
	}
	return fmt.Sprintf("%s (%s)", out, bi.GoVersion)
}
