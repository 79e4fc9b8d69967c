package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/larkpost/larkpost/engine/dkimsign"
)

// runDKIM is `larkpost dkim keygen ...` and `larkpost dkim dns`: make a
// signing key and print the DNS record to publish, as opendkim-genkey
// does, or print the records of the keys a config signs with.
func runDKIM(args []string, stdout, stderr io.Writer) int {
	const usage = "usage: larkpost dkim keygen [--algorithm rsa|ed25519] [--bits N] [-o FILE] DOMAIN SELECTOR\n       larkpost dkim dns [-c FILE]"
	if len(args) > 0 && isHelpArg(args[0]) {
		fmt.Fprintln(stdout, usage)
		return 0
	}
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	switch args[0] {
	case "keygen":
		return dkimKeygen(args[1:], stdout, stderr)
	case "dns":
		fs := newFlagSet("dkim dns", stderr)
		file := configFlag(fs)
		if code, ok := parseFlags(fs, interleaved(args[1:], fs.Lookup), stdout, stderr); !ok {
			return code
		}
		if extraArgs("dkim dns", configArg(fs, file, fs.Args(), nil), 0, stderr) {
			return 2
		}
		p, ok := loadPolicy(*file, stderr, nil)
		if !ok {
			return 1
		}
		s := p.DKIMSigner()
		if s == nil {
			fmt.Fprintln(stderr, "larkpost dkim dns: the config has no dkim_keys")
			return 1
		}
		for _, k := range s.Keys() {
			fmt.Fprintf(stdout, "; %s (%s)\n%s", k.File, k.Algorithm, zoneRecord(k.Selector, k.Domain, k.TXT()))
		}
		return 0
	}
	fmt.Fprintln(stderr, usage)
	return 2
}

func dkimKeygen(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("dkim keygen", stderr)
	algo := fs.String("algorithm", "rsa", "key `TYPE`: rsa or ed25519 (sign with both for the widest support: two keys, two selectors)")
	bits := fs.Int("bits", 2048, "RSA key size in `BITS` (2048 to 4096)")
	out := fs.String("o", "", "write the private key to `FILE` (default DOMAIN.SELECTOR.key); never overwritten")
	if code, ok := parseFlags(fs, interleaved(args, fs.Lookup), stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(stderr, "usage: larkpost dkim keygen [--algorithm rsa|ed25519] [--bits N] [-o FILE] DOMAIN SELECTOR")
		return 2
	}
	domain, selector := strings.ToLower(strings.TrimSuffix(fs.Arg(0), ".")), fs.Arg(1)
	if dkimsign.TXTName(selector, domain) == "" || strings.ContainsAny(domain+selector, " /\\") {
		fmt.Fprintf(stderr, "larkpost dkim keygen: bad domain or selector %q %q\n", domain, selector)
		return 2
	}
	n := *bits
	if *algo == "ed25519" {
		n = 0 // its size is fixed; --bits is for RSA
	}
	key, txt, err := dkimsign.Keygen(*algo, n)
	if err != nil {
		fmt.Fprintf(stderr, "larkpost dkim keygen: %v\n", err)
		return 2
	}
	file := *out
	if file == "" {
		file = domain + "." + selector + ".key"
	}
	// O_EXCL: an existing key is somebody's published one.
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			err = fmt.Errorf("%s exists; not overwriting a key (choose a new selector or -o)", file)
		}
		fmt.Fprintf(stderr, "larkpost dkim keygen: %v\n", err)
		return 1
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(file)
		fmt.Fprintf(stderr, "larkpost dkim keygen: %v\n", err)
		return 1
	}
	if err := f.Close(); err != nil {
		fmt.Fprintf(stderr, "larkpost dkim keygen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "; private key written to %s (mode 0600; the server's user must read it)\n", file)
	fmt.Fprintf(stdout, "; publish this record, then add to config(...):\n;   dkim_keys = [{\"domain\": %q, \"selector\": %q, \"key_file\": %q}]\n", domain, selector, file)
	fmt.Fprint(stdout, zoneRecord(selector, domain, txt))
	return 0
}

// zoneRecord is the TXT record in zone-file form, its value split into
// strings of at most 255 bytes (an RSA-2048 key does not fit in one).
func zoneRecord(selector, domain, txt string) string {
	var parts []string
	for len(txt) > 255 {
		parts = append(parts, txt[:255])
		txt = txt[255:]
	}
	parts = append(parts, txt)
	for i, p := range parts {
		parts[i] = `"` + p + `"`
	}
	return dkimsign.TXTName(selector, domain) + ". IN TXT ( " + strings.Join(parts, "\n\t") + " )\n"
}
