package maps

import (
	"fmt"
	"strings"
)

// This file is Postfix's db_common.c: the %-expansions of the query and
// result_format templates, the checks that suppress a query whose key
// lacks what the templates need, and the domain restriction. The names
// of the flags are db_common.c's.

const (
	keyDomain   = 1 << iota // a template needs the key's domain (%d in the query, %D, %1-%9)
	keyUser                 // ... the key's local part (%u in the query, %U)
	valueDomain             // result_format needs the result's domain (%d)
	valueUser               // ... the result's local part (%u)
)

// sqlCtx is where in the SQL text of a query an expansion stands, which
// decides how the key is quoted there.
type sqlCtx uint8

const (
	ctxString  sqlCtx = iota // inside '...': quotes are doubled
	ctxEString               // inside E'...' (PostgreSQL): backslashes are doubled too
	ctxBare                  // outside any quotes: the key becomes a '...' literal
)

// sqlPart is literal text followed by one expansion (verb 0: none).
type sqlPart struct {
	lit  string
	verb byte // s u d S U D 1-9
	ctx  sqlCtx
}

// template is a parsed query or result_format.
type sqlTemplate struct {
	text  string
	parts []sqlPart
}

// dbCommon is what the templates of one table need of a key, as
// db_common.c's DB_COMMON_CTX.
type dbCommon struct {
	flags  int
	nparts int // the highest %1-%9 of the query and result templates
}

// note records what verb needs, as db_common_parse.
func (c *dbCommon) note(verb byte, query bool) {
	switch verb {
	case 'u':
		if query {
			c.flags |= keyUser
		} else {
			c.flags |= valueUser
		}
	case 'd':
		if query {
			c.flags |= keyDomain
		} else {
			c.flags |= valueDomain
		}
	case 'U':
		c.flags |= keyUser
	case 'D':
		c.flags |= keyDomain
	case '1', '2', '3', '4', '5', '6', '7', '8', '9':
		c.nparts = max(c.nparts, int(verb-'0'))
		c.flags |= keyDomain
	}
}

// validVerb reports the characters that may follow "%".
func validVerb(c byte) bool {
	return strings.IndexByte("sudSUD123456789", c) >= 0
}

// parseResultFormat parses result_format, where nothing is quoted.
func parseResultFormat(format string, c *dbCommon) (*sqlTemplate, error) {
	t := &sqlTemplate{text: format}
	var lit strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			lit.WriteByte(format[i])
			continue
		}
		i++
		switch {
		case i == len(format):
			return nil, fmt.Errorf("result_format %q ends in a lone %%", format)
		case format[i] == '%':
			lit.WriteByte('%')
		case validVerb(format[i]):
			t.parts = append(t.parts, sqlPart{lit: lit.String(), verb: format[i]})
			lit.Reset()
			c.note(format[i], false)
		default:
			return nil, fmt.Errorf("result_format %q: invalid %%%c (want %%%%, %%s, %%u, %%d, %%S, %%U, %%D or %%1 to %%9)", format, format[i])
		}
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, sqlPart{lit: lit.String()})
	}
	return t, nil
}

// lexState is where a scan of SQL text is.
type lexState uint8

const (
	lexCode lexState = iota
	lexString
	lexEString
	lexUString  // U&'...' (PostgreSQL)
	lexIdent    // "..."
	lexBracket  // [...] (SQLite)
	lexBacktick // `...` (SQLite)
	lexLineComment
	lexBlockComment
	lexDollar // $tag$...$tag$ (PostgreSQL)
)

var lexNames = map[lexState]string{
	lexUString: "a U&'...' string", lexIdent: `a "quoted" identifier`, lexBracket: "a [bracketed] identifier",
	lexBacktick: "a `quoted` identifier", lexLineComment: "a -- comment", lexBlockComment: "a /* comment */",
	lexDollar: "a $$dollar-quoted$$ string",
}

func isIdentChar(c byte) bool {
	return c == '_' || c == '$' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c >= 0x80
}

// parseQuery parses a query template and notes where each expansion
// stands in the SQL text, so that the key can be quoted for that place.
// Postfix substitutes the escaped key wherever %s is written and counts
// on the administrator to write '%s'; larkpost refuses the places where
// no quoting can keep a key from being read as SQL (identifiers,
// comments, dollar quoting), quotes a bare %s as a string literal, and
// warns about it the way Postfix's sqlite client does.
func parseQuery(query string, pg bool, c *dbCommon, warnf func(string, ...any)) (*sqlTemplate, error) {
	t := &sqlTemplate{text: query}
	var lit strings.Builder
	state, depth, tag := lexCode, 0, ""
	bare := false
	// at is the character before a token as the database will see it:
	// an expansion outside quotes becomes " '...' ", so what follows it
	// follows a blank, whatever the verb's letter.
	verbAt := -1
	at := func(j int) byte {
		switch {
		case j < 0:
			return 0
		case j == verbAt || j == verbAt-1:
			return ' '
		}
		return query[j]
	}
	for i := 0; i < len(query); i++ {
		ch := query[i]
		if ch == '%' {
			i++
			if i == len(query) {
				return nil, fmt.Errorf("query ends in a lone %%")
			}
			v := query[i]
			if v == '%' {
				lit.WriteByte('%')
				continue
			}
			if !validVerb(v) {
				return nil, fmt.Errorf("query: invalid %%%c (want %%%%, %%s, %%u, %%d, %%S, %%U, %%D or %%1 to %%9)", v)
			}
			var ctx sqlCtx
			switch state {
			case lexCode:
				ctx, bare = ctxBare, true
			case lexString:
				ctx = ctxString
			case lexEString:
				ctx = ctxEString
			default:
				return nil, fmt.Errorf("query: %%%c inside %s, where the key cannot be quoted safely; put it in '...'", v, lexNames[state])
			}
			t.parts = append(t.parts, sqlPart{lit: lit.String(), verb: v, ctx: ctx})
			lit.Reset()
			c.note(v, true)
			verbAt = i
			continue
		}
		lit.WriteByte(ch)
		next := byte(0)
		if i+1 < len(query) {
			next = query[i+1]
		}
		switch state {
		case lexCode:
			switch {
			case ch == '\'':
				state = lexString
				// Any E just before the quote counts, even after a
				// letter: doubling a backslash in a string that turns
				// out standard only changes the key, where missing an
				// E'...' string would let a backslash escape the quote.
				if pg && (at(i-1) == 'E' || at(i-1) == 'e') {
					state = lexEString
				}
				if pg && at(i-1) == '&' && (at(i-2) == 'U' || at(i-2) == 'u') {
					state = lexUString
				}
			case ch == '"':
				state = lexIdent
			case ch == '-' && next == '-':
				state = lexLineComment
			case ch == '/' && next == '*':
				state, depth = lexBlockComment, 1
				lit.WriteByte(next)
				i++
			case pg && ch == '$' && !isIdentChar(at(i-1)):
				j := i + 1
				for j < len(query) && (query[j] == '_' || 'a' <= query[j] && query[j] <= 'z' || 'A' <= query[j] && query[j] <= 'Z' || j > i+1 && '0' <= query[j] && query[j] <= '9') {
					j++
				}
				if j < len(query) && query[j] == '$' {
					tag = query[i : j+1]
					state = lexDollar
					lit.WriteString(query[i+1 : j+1])
					i = j
				}
			case !pg && ch == '[':
				state = lexBracket
			case !pg && ch == '`':
				state = lexBacktick
			}
		case lexString, lexEString, lexUString:
			switch {
			case ch == '\\' && state == lexEString:
				if next == '%' {
					return nil, fmt.Errorf("query: a backslash before %% in an E'...' string would escape the quoting of the key")
				}
				if next != 0 {
					lit.WriteByte(next)
					i++
				}
			case ch == '\'' && next == '\'':
				lit.WriteByte(next)
				i++
			case ch == '\'':
				state = lexCode
			}
		case lexIdent, lexBacktick:
			quote := byte('"')
			if state == lexBacktick {
				quote = '`'
			}
			if ch == quote && next == quote {
				lit.WriteByte(next)
				i++
			} else if ch == quote {
				state = lexCode
			}
		case lexBracket:
			if ch == ']' {
				state = lexCode
			}
		case lexLineComment:
			if ch == '\n' {
				state = lexCode
			}
		case lexBlockComment:
			switch {
			case ch == '*' && next == '/':
				lit.WriteByte(next)
				i++
				if depth--; depth == 0 {
					state = lexCode
				}
			case pg && ch == '/' && next == '*':
				lit.WriteByte(next)
				i++
				depth++
			}
		case lexDollar:
			if ch == '$' && strings.HasPrefix(query[i:], tag) {
				lit.WriteString(tag[1:])
				i += len(tag) - 1
				state = lexCode
			}
		}
	}
	switch state {
	case lexCode, lexLineComment:
	default:
		what := lexNames[state]
		if what == "" {
			what = "a '...' string"
		}
		return nil, fmt.Errorf("query: %s is not closed", what)
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, sqlPart{lit: lit.String()})
	}
	if bare && warnf != nil {
		warnf("query %q has a %% expansion outside '...' quotes; larkpost quotes the key as a string literal there", query)
	}
	return t, nil
}

// splitAt returns what is before and after the last "@" of s; found is
// false when there is none.
func splitAt(s string) (local, domain string, found bool) {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// domainLabels splits a domain at its dots, dropping empty labels as
// Postfix's argv_split does.
func domainLabels(d string) []string {
	return strings.FieldsFunc(d, func(r rune) bool { return r == '.' })
}

// quoter quotes one expanded value for its place in the query; nil for
// result_format, where nothing is quoted.
type quoter func(s string, ctx sqlCtx) (string, error)

// expand appends the expansion of t to out as db_common_expand does, and
// reports false when the input lacks what the templates need, which
// suppresses the query or skips the result value. For a query template
// value is the lookup key and key is unused; for result_format value is
// one result value and key the lookup key.
func (c *dbCommon) expand(t *sqlTemplate, value, key string, result bool, q quoter, out *strings.Builder) (bool, error) {
	if value == "" {
		return false, nil
	}
	var vuser, vdomain, kuser, kdomain string
	var vat, kat bool
	if result {
		if c.flags&(valueDomain|valueUser) != 0 {
			vuser, vdomain, vat = splitAt(value)
		}
		if vdomain == "" && c.flags&valueDomain != 0 || vat && vuser == "" && c.flags&valueUser != 0 {
			return false, nil
		}
		if c.flags&(keyDomain|keyUser) != 0 {
			kuser, kdomain, kat = splitAt(key)
		}
		if kdomain == "" && c.flags&keyDomain != 0 || kat && kuser == "" && c.flags&keyUser != 0 {
			return false, nil
		}
	} else {
		if c.flags&(keyDomain|keyUser) != 0 {
			vuser, vdomain, vat = splitAt(value)
		}
		if vdomain == "" && c.flags&keyDomain != 0 || vat && vuser == "" && c.flags&keyUser != 0 {
			return false, nil
		}
	}
	var labels []string
	if c.nparts > 0 {
		d := vdomain
		if result {
			d = kdomain
		}
		if labels = domainLabels(d); len(labels) < c.nparts {
			return false, nil
		}
	}
	if out.Len() > 0 {
		out.WriteByte(',')
	}
	for _, p := range t.parts {
		out.WriteString(p.lit)
		var s string
		switch p.verb {
		case 0:
			continue
		case 's':
			s = value
		case 'u':
			s = value
			if vat {
				s = vuser
			}
		case 'd':
			s = vdomain
		case 'S':
			s = value
			if result {
				s = key
			}
		case 'U':
			switch {
			case result && kat:
				s = kuser
			case result:
				s = key
			case vat:
				s = vuser
			default:
				s = value
			}
		case 'D':
			s = vdomain
			if result {
				s = kdomain
			}
		default: // 1-9, checked when parsed
			s = labels[len(labels)-int(p.verb-'0')]
		}
		if q != nil {
			var err error
			if s, err = q(s, p.ctx); err != nil {
				return false, err
			}
		}
		out.WriteString(s)
	}
	return true, nil
}

// quoteWith makes the quoter of a query from a database's escaping of
// text inside '...'.
func quoteWith(escape func(string) (string, error)) quoter {
	return func(s string, ctx sqlCtx) (string, error) {
		if ctx == ctxEString {
			s = strings.ReplaceAll(s, `\`, `\\`)
		}
		e, err := escape(s)
		if err != nil {
			return "", err
		}
		if ctx == ctxBare {
			// The spaces keep the literal from joining what is
			// written next to it: E%s would make an E'...' string,
			// and '%s'%s one literal with a quote in it.
			return " '" + e + "' ", nil
		}
		return e, nil
	}
}

// domainItem is one element of a table's domain list.
type domainItem struct {
	neg   bool
	name  string // lower case
	table Table  // a type:table element
}

// domainList is the domain parameter, a Postfix string list: names,
// /file/name elements read when the table opens, and type:table elements
// looked up at each check. The first element that matches decides; a
// "!" in front of it makes its match a refusal.
type domainList struct {
	items []domainItem
}

// match reports whether the domain of the address key is in the list,
// as db_common_check_domain: a key without "@", or with nothing before
// it, is never looked up.
func (l *domainList) match(key string) (bool, error) {
	if l == nil {
		return true, nil
	}
	local, domain, found := splitAt(key)
	if !found || local == "" {
		return false, nil
	}
	for _, it := range l.items {
		hit := it.name == domain
		if it.table != nil {
			var err error
			if _, hit, err = Lookup(it.table, domain); err != nil {
				return false, err
			}
		}
		if hit {
			return !it.neg, nil
		}
	}
	return false, nil
}
