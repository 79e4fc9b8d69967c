package importer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/larkpost/larkpost/stdlib/maps"
)

// tableRef is a table the generated script opens at the top level.
type tableRef struct {
	Var  string // ACCESS
	Spec string // as written in larkpost.star
	FS   string // its file as this process reads it ("" for inline and static)
	Typ  string
}

// entry is one line of a table's source file.
type entry struct {
	key, value string
	line       int
}

var indexedTypes = map[string]bool{"hash": true, "btree": true, "lmdb": true, "cdb": true, "dbm": true, "sdbm": true, "texthash": true}

// resolvePath gives the file a Postfix path names, as this process can
// open it, and the path to write into larkpost.star. An absolute path
// stays. A relative one came either from a relative $config_directory
// (the folder as given on the command line: it is written relative to the
// output folder, so the config finds the same file) or was written so in
// main.cf, where Postfix takes it from its queue directory.
func (c *conv) resolvePath(p string) (fs, written string) {
	if filepath.IsAbs(p) {
		return p, p
	}
	dir := filepath.Clean(c.o.Dir)
	if !filepath.IsAbs(dir) && (strings.HasPrefix(p, dir+"/") || p == dir) {
		fs = filepath.Clean(p)
		if filepath.IsAbs(c.o.OutDir) {
			abs, err := filepath.Abs(fs)
			if err == nil {
				return fs, abs
			}
		}
		rel, err := filepath.Rel(filepath.Clean(c.o.OutDir), fs)
		if err != nil {
			return fs, fs
		}
		return fs, rel
	}
	fs = filepath.Join(c.queueDir, p)
	return fs, fs
}

// sourceFile checks that a file table's source text is there: larkpost
// reads it, not the .db postmap built from it.
func (c *conv) sourceFile(param, path string, aliases bool) (string, bool) {
	fs, written := c.resolvePath(path)
	if _, err := os.Stat(fs); err != nil {
		for _, ext := range []string{".db", ".lmdb", ".cdb"} {
			if _, err2 := os.Stat(fs + ext); err2 == nil {
				todo := fmt.Sprintf("recreate the source file larkpost reads: postmap -s hash:%s > %s (aliases: postalias -s)", fs, fs)
				if aliases {
					todo = fmt.Sprintf("recreate the aliases file: postalias -s hash:%s > %s", fs, fs)
				}
				c.hand(param, fmt.Sprintf("%s: only the indexed file %s%s exists, without the text it was built from", fs, fs, ext), todo)
				return "", false
			}
		}
		c.hand(param, fmt.Sprintf("%s: %v", fs, errors.Unwrap(err)), "create the table, or remove it from the setting")
		return "", false
	}
	return written, true
}

// tableSpec converts one table of a setting to the spec larkpost.star
// names; ok is false (and the report says why) for tables larkpost cannot
// read.
func (c *conv) tableSpec(param, spec string) (string, bool) {
	orig := spec
	for strings.HasPrefix(spec, "proxy:") {
		spec = strings.TrimPrefix(spec, "proxy:")
	}
	typ, rest, ok := strings.Cut(spec, ":")
	if !ok || !isTableSpec(spec) {
		typ, rest = "hash", spec
	}
	switch {
	case indexedTypes[typ]:
		p, ok := c.sourceFile(param, rest, false)
		if !ok {
			return "", false
		}
		return c.checked(param, typ+":"+p, orig)
	case typ == "regexp" || typ == "pcre" || typ == "cidr":
		if strings.HasPrefix(strings.TrimSpace(rest), "{") {
			return c.checked(param, typ+":"+rest, orig)
		}
		fs, written := c.resolvePath(rest)
		if _, err := os.Stat(fs); err != nil {
			c.hand(param, fmt.Sprintf("%s: %v", fs, errors.Unwrap(err)), "create the table, or remove it from the setting")
			return "", false
		}
		return c.checked(param, typ+":"+written, orig)
	case typ == "inline" || typ == "static":
		return c.checked(param, spec, orig)
	case typ == "pgsql" || typ == "sqlite":
		fs, written := c.resolvePath(rest)
		if _, err := os.Stat(fs); err != nil {
			c.hand(param, fmt.Sprintf("%s: %v", fs, errors.Unwrap(err)), "create the table's configuration file")
			return "", false
		}
		return c.checked(param, typ+":"+written, orig)
	}
	c.hand(param, fmt.Sprintf("%s: larkpost does not read %s: tables", orig, typ),
		"export the table to a text file (hash:), or serve it from PostgreSQL or SQLite (docs/guide/lookup-tables.md)")
	return "", false
}

// checked parses the table as larkpost will, so a table with errors is
// reported here rather than failing `larkpost check`.
func (c *conv) checked(param, spec, orig string) (string, bool) {
	_, err := maps.Check(spec, c.o.OutDir)
	if err != nil {
		msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
		c.hand(param, orig+": larkpost cannot read it: "+msg, "fix the table (larkpost map query shows how it is read)")
		return "", false
	}
	return spec, true
}

// tableKeys reads the entries of an indexed or cidr table's source file.
func (c *conv) tableKeys(spec string) ([]entry, string, error) {
	for strings.HasPrefix(spec, "proxy:") {
		spec = strings.TrimPrefix(spec, "proxy:")
	}
	typ, rest, _ := strings.Cut(spec, ":")
	if !indexedTypes[typ] && typ != "cidr" {
		if typ == "inline" {
			var out []entry
			body := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(rest), "{"), "}")
			for _, kv := range splitList(body) {
				kv = strings.Trim(kv, "{} ")
				k, v, _ := strings.Cut(kv, "=")
				out = append(out, entry{key: strings.TrimSpace(k), value: strings.TrimSpace(v)})
			}
			return out, "", nil
		}
		return nil, "", fmt.Errorf("the keys of a %s: table cannot be listed", typ)
	}
	fs, _ := c.resolvePath(rest)
	es, err := readEntries(fs)
	return es, fs, err
}

// readEntries reads postmap source text: "key whitespace value", lines
// starting with whitespace continue the previous entry, # comments.
func readEntries(path string) ([]entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errors.Unwrap(err)
	}
	defer f.Close()
	var out []entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	n := 0
	for sc.Scan() {
		n++
		l := strings.TrimRight(sc.Text(), "\r")
		t := strings.TrimSpace(l)
		if t == "" || t[0] == '#' {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(out) > 0 {
			out[len(out)-1].value += " " + t
			continue
		}
		i := strings.IndexAny(t, " \t")
		if i < 0 {
			out = append(out, entry{key: strings.ToLower(t), line: n})
			continue
		}
		out = append(out, entry{key: strings.ToLower(t[:i]), value: strings.TrimSpace(t[i:]), line: n})
	}
	return out, sc.Err()
}

// openTable returns the variable a table is opened in at the top level of
// larkpost.star.
func (c *conv) openTable(param, spec string) (*tableRef, bool) {
	key := strings.TrimPrefix(spec, "proxy:")
	if t := c.tableByKey[key]; t != nil {
		return t, true
	}
	s, ok := c.tableSpec(param, spec)
	if !ok {
		return nil, false
	}
	typ, rest, _ := strings.Cut(s, ":")
	base := typ
	if typ != "inline" && typ != "static" && !strings.HasPrefix(rest, "{") {
		base = filepath.Base(rest)
	}
	v := varName(base)
	for n := 2; c.varTaken(v); n++ {
		v = fmt.Sprintf("%s_%d", varName(base), n)
	}
	fs := ""
	if typ != "inline" && typ != "static" && !strings.HasPrefix(rest, "{") {
		_, r, _ := strings.Cut(key, ":")
		fs, _ = c.resolvePath(r)
	}
	t := &tableRef{Var: v, Spec: s, FS: fs, Typ: typ}
	c.tableByKey[key] = t
	c.tables = append(c.tables, t)
	return t, true
}

func (c *conv) varTaken(v string) bool {
	switch v {
	case "MYDESTINATION", "RELAY_DOMAINS", "VIRTUAL_ALIAS_DOMAINS", "VIRTUAL_MAILBOX_DOMAINS", "PERMIT", "RESTRICTIONS":
		return true
	}
	for _, t := range c.tables {
		if t.Var == v {
			return true
		}
	}
	return false
}

func varName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(s) {
		if 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	v := strings.Trim(b.String(), "_")
	if v == "" || v[0] >= '0' && v[0] <= '9' {
		v = "T_" + v
	}
	return v
}
