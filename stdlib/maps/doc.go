// Package maps reads Postfix lookup tables from the files administrators
// already have, and provides the Starlark module "maps" to use them in
// policy scripts.
//
// There is no postmap step: larkpost reads the text source of a table
// (/etc/postfix/access, not access.db) and indexes it in memory when the
// table is opened, and again whenever the file changes.
//
// # Table names
//
// A table is named as in Postfix's main.cf, type:name:
//
//	hash:/etc/postfix/access       key/value text file (postmap source format)
//	btree:, lmdb:, cdb:, dbm:,     the same: the on-disk format Postfix would
//	sdbm:, texthash:               build makes no difference to larkpost
//	/etc/postfix/access            a bare path means hash:
//	regexp:/etc/postfix/checks     regular expression table, regexp_table(5)
//	pcre:/etc/postfix/checks       regular expression table, pcre_table(5)
//	cidr:/etc/postfix/clients      network table, cidr_table(5)
//	inline:{ a=b, { c = d e } }    a table in the setting itself (Postfix 3.0)
//	static:value                   every key gives value; static:{ a b } for spaces
//	pgsql:/etc/postfix/virtual.cf  PostgreSQL query, pgsql_table(5)
//	sqlite:/etc/postfix/virtual.cf SQLite query, sqlite_table(5)
//	proxy:hash:/etc/postfix/x      the same as hash:/etc/postfix/x
//
// Relative paths are resolved against the directory of the configuration
// file. Regexp, pcre and cidr rules can also be written inline, as in
// Postfix 3.7: regexp:{ {/^a/ b}, {/^c/ d} }.
//
// # Key/value files (hash and friends)
//
// These are the files postmap(1) reads:
//
//   - Each logical line is "key value": the key is the first word, the
//     value is the rest of the line with surrounding whitespace removed.
//     A line with no value is an error.
//   - Blank lines, and lines whose first non-blank character is "#", are
//     ignored. A "#" later in a line is part of the key or value.
//   - A line that starts with whitespace continues the previous logical
//     line, even across blank and comment lines; it is appended as it is,
//     leading whitespace included. This is a classic trap: an indented
//     "@example.com REJECT" silently becomes part of the value above it.
//     larkpost reads such a line the way postmap does, but warns when the
//     line looks like an entry of its own (it has two or more words and
//     the line before it does not end with a comma, as continued address
//     lists do). An indented line with no line before it is an error.
//   - Keys are case-insensitive: they are stored in lower case, and
//     lookups fold the key too. Values keep their case.
//   - A repeated key is a warning, and the later entry wins. (postmap
//     warns "duplicate entry" too but keeps the first one; see below.)
//   - A key ending in ":" draws a warning: that is the aliases(5) format.
//   - A file containing a NUL byte is rejected: it is the indexed file
//     postmap writes (access.db), not its source.
//
// # Regular expression tables (regexp and pcre)
//
// As in regexp_table(5) and pcre_table(5), each logical line is a rule:
//
//	/pattern/flags result      result when pattern matches
//	!/pattern/flags result     result when pattern does not match
//	/pat1/!/pat2/ result       (regexp only) when pat1 matches and pat2 not
//	if /pattern/flags          the rules up to the matching endif apply
//	if !/pattern/flags         only when pattern (does not) match; blocks
//	endif                      nest; "if" and "endif" ignore case
//
// Rules are tried in file order and the first match wins. Any character
// can delimit a pattern instead of "/", and a backslash escapes it inside
// the pattern. Comments, blank lines and continuation lines are as in
// key/value files, so the rules inside an if block must not be indented.
//
// The result may use $1 to $99, ${n} or $(n) for the text matched by the
// nth parenthesized group, which is empty when the group took no part in
// the match, and $$ for a dollar sign. A $n beyond the pattern's groups,
// a $ without a number, and $n in the result of a negated rule are
// errors. A missing result is a warning and gives the empty string.
//
// Matching ignores case by default, as in Postfix. The flags toggle:
//
//	regexp:  i  case-sensitive matching
//	         m  "." does not match a newline; ^ and $ match at newlines
//	         x  (POSIX basic syntax) is not supported: an error
//	pcre:    i  case-sensitive matching
//	         m  ^ and $ match at newlines
//	         s  "." does not match a newline (PCRE_DOTALL is on by default)
//	         x  whitespace and # comments in the pattern are ignored
//	         A  the pattern must match at the start of the input
//	         U  quantifiers are lazy unless followed by ?
//	         E, X  accepted and ignored
//
// Patterns are compiled with Go's RE2 engine (package regexp), which
// understands both POSIX extended syntax, [[:alpha:]] classes included,
// and Perl syntax such as \d, \s, \w, \b and (?:...). What RE2 cannot do
// is an error naming the construct and the line: backreferences (\1),
// lookahead and lookbehind ((?=, (?!, (?<=, (?<!) and atomic groups
// ((?>). The GNU word boundaries \< and \> are read as \b. Differences
// that remain: inside [...] a backslash escapes as in Perl, not literally
// as in POSIX; and $ matches only at the very end of the input (PCRE also
// matches before a final newline). regexp tables use leftmost-longest
// matching like POSIX regexec, and pcre tables leftmost-first like Perl,
// so that $n mostly captures what it would in Postfix; when a longest
// match can be split among the groups in several ways, RE2 may split it
// differently from the C library.
//
// # CIDR tables
//
// As in cidr_table(5), each logical line is "network/prefix result" or
// "address result" (an exact address). Addresses may be written in
// brackets, [2001:db8::]/32, and a pattern may be negated with "!": it
// then matches the addresses of its family outside the network. Rules are
// tried in file order and the first match wins, so list a host or a small
// network before a network containing it. IPv4 patterns match only IPv4
// addresses and IPv6 patterns only IPv6 ones. A network with host bits
// set (192.0.2.1/24) is an error that suggests the right network.
// "if network" ... "endif" blocks work as in regexp tables.
//
// # SQL tables (pgsql and sqlite)
//
// A pgsql: or sqlite: table names a configuration file in the format of
// pgsql_table(5) and sqlite_table(5): "name = value" lines as in main.cf,
// read once when the table is opened. The parameters are Postfix's
// (hosts, user, password, dbname, encoding, retry_interval,
// idle_interval, dbpath, query, select_function, result_format, domain,
// expansion_limit, and the legacy table, select_field, where_field and
// additional_conditions) and larkpost's own, which Postfix ignores:
//
//	timeout          one attempt on one host, connecting included (5s)
//	cache_ttl        how long answers, found or not, are kept (60s; 0: none)
//	cache_size       the most keys kept (10000)
//	max_connections  connections per host or database file (4)
//
// An unknown name is an error, reported with its FILE:LINE when the
// table is opened. A relative dbpath is taken from the configuration
// file's directory; the SQLite database is opened read-only.
//
// Lookups follow Postfix's db_common.c: the key is folded to lower case;
// a key outside the domain list, or one that lacks what the query or
// result_format needs (%d, %D or %1-%9 of a key without "@", %u of an
// empty local part), is not looked up and is not found; %s, %u, %d,
// %S, %U, %D and %1-%9 are expanded in the query, quoted for where they
// stand (a doubled quote inside '...', with PostgreSQL's own escaping for
// the connection; backslashes doubled too inside E'...'; a '...' literal
// made of a bare %s), and an expansion inside an identifier, comment or
// dollar quote is an error; each value of the rows (every column for
// pgsql, the first for sqlite) is expanded with result_format, values
// without what it needs skipped, and the results joined with commas.
// More values than expansion_limit is a failure.
//
// The pgsql hosts are tried in the order written, each within the
// timeout; one that failed is skipped for retry_interval unless it is
// the only one. Connections are pooled per host and closed after
// idle_interval without use.
//
// A lookup that cannot be answered (the database is down, slow, locked
// or refuses the query) is never "not found": Lookup returns a
// *LookupError, which the Lookup functions and the router pass on, so
// that mail is deferred rather than refused or bounced. A database that
// does not answer when the table is opened draws a warning only.
//
// # Errors and reloading
//
// Opening a table whose file has errors fails with every error listed as
// FILE:LINE: message, FILE being the path as written in the table name.
// Postfix would skip such lines with a warning; larkpost refuses the
// file, because a table that silently lost a rule is worse than a
// configuration that does not load. Warnings are logged and the table
// loads.
//
// A table read from a file checks the file at most once a second, when it
// is used, and reloads it if its modification time, size or inode
// changed. No restart or reload command is needed, and lookups never wait
// for the file: one of them checks while the others use the current
// version. If the new version has errors, larkpost logs them once and
// keeps using the last version that loaded; when the file is fixed, the
// new version is used. A file that disappears also keeps the last
// version, and so does a file that is being written: like Postfix, which
// lets a changed texthash file "cool down", larkpost loads a new version
// only once it is a second old, and a file that became empty only once it
// has stayed empty for a second (a truncated file does not always show a
// new modification time at once). So a change is in use one to two
// seconds after the file was saved. To replace a table atomically, write
// a new file and rename it over the old one.
//
// A key/value table keeps the file's text in memory plus about 44 bytes
// per entry: a file of a million lines of 53 bytes loads in about a
// quarter of a second and takes about 93 MB.
//
// # Lookup orders
//
// Get looks up one key: exactly (in lower case) in key/value tables, and
// with the first matching rule in regexp and cidr tables. The Lookup
// functions try the forms of a key in the order Postfix does for each
// kind of table, and stop at the first hit. Regexp, pcre, cidr and static
// tables are pattern tables: like Postfix, the Lookup functions query them
// only once, with the whole input, because trying partial keys such as
// "@example.com" or "1.2.3" against patterns would match things their
// author never meant.
//
// Addresses are looked up in lower case, with the local part quoted if it
// is not a dot-atom ("a,b"@example.com), the form in which such an
// address is written in a table. recipient_delimiter may list several
// characters; the local part is split at the first of them (see package
// addr).
//
// LookupAddress, as canonical(5), virtual(5) and relocated(5), for
// user+ext@example.com:
//
//	user+ext@example.com
//	user@example.com
//	user+ext      only if example.com is local ($myorigin, $mydestination)
//	user          only if example.com is local
//	@example.com
//
// LookupAccess, as access(5) for check_sender_access and
// check_recipient_access, for user+ext@mail.example.com:
//
//	user+ext@mail.example.com
//	user@mail.example.com
//	mail.example.com
//	.example.com  example.com
//	.com          com
//	user+ext@
//	user@
//
// The null sender is looked up as "<>" (smtpd_null_access_lookup_key).
// The domain part is searched as by LookupDomain.
//
// LookupDomain, as access(5) for host names (check_client_access,
// check_helo_access) and domains, for mail.example.com:
//
//	mail.example.com
//	.example.com  example.com
//	.com          com
//
// Postfix tries either ".example.com" (matches subdomains only) or
// "example.com" (matches the domain and its subdomains), depending on
// whether the table's setting is listed in parent_domain_matches_subdomains.
// larkpost tries both, ".example.com" first, so a table written for either
// style works. An IP address or address literal is looked up as it is.
//
// LookupTransport, as transport(5), for user+ext@mail.example.com:
//
//	user+ext@mail.example.com
//	user@mail.example.com
//	mail.example.com
//	.example.com
//	.com
//	*
//
// Here example.com does not match mail.example.com, as in Postfix, whose
// parent_domain_matches_subdomains does not list transport_maps.
//
// LookupIP, as access(5) for client addresses, for 192.0.2.10:
//
//	192.0.2.10
//	192.0.2
//	192.0
//	192
//
// An IPv6 address is written in compressed lower-case form and cut at its
// last ":" again and again, as Postfix does: 2001:db8::1 gives
// 2001:db8::1, 2001:db8:, 2001:db8 and 2001. IPv4-mapped IPv6 addresses
// are looked up as IPv4. Use a cidr table for real network masks.
//
// # The maps module
//
// Scripts open tables with the module "maps":
//
//	access = maps.open("hash:/etc/postfix/access")
//	nets = maps.open("cidr:client_networks")
//	local = maps.inline({"postmaster": "root", "abuse": "root"})
//
//	def on_rcpt(tx, rcpt):
//	    v = access.lookup(rcpt)    # or access.access(rcpt)
//	    ...
//
// maps.open(spec) opens the table named spec, with paths relative to the
// configuration file. Errors in the file fail the script when it loads,
// with every diagnostic, for example
//
//	maps.open: access:3: expected format: key whitespace value, got "example.com"
//
// maps.inline(entries) makes a table from a dict of strings to strings.
//
// A lookup in a table that fails (a SQL table whose database does not
// answer) is an error of the method, naming the table and the cause,
// never None: the hook then fails, and the client is told to try again.
//
// A table is a value of type "table". It cannot be changed by scripts,
// follows its file as it changes, and can be used as a dict key (tables
// are equal only to themselves). Its methods return the value found, a
// string, or None:
//
//	table.get(key, default=None)  Get: the exact key (default if absent)
//	table.lookup(address)         LookupAddress (canonical, virtual, relocated)
//	table.access(key)             LookupAccess for an address or "<>",
//	                              LookupIP for an IP address, and
//	                              LookupDomain for a host name
//	table.domain(name)            LookupDomain
//	table.transport(address)      LookupTransport
//	table.ip(addr)                LookupIP
//	table.match(key, mode="auto") the tuple (value, matched key), or None:
//	                              which key form matched, for debugging
//	table.name                    the table's name, e.g. "hash:access"
//
// Addresses can be given as strings or as address values such as rcpt and
// sender. `key in table` and table[key] use Get, like table.get. The modes
// of match are those of `larkpost map query`: "auto" (by the shape of the
// key: an address, an IP address or a domain), "get", "address",
// "access", "access-ip" (or "ip"), "domain" and "transport".
//
// # Differences from Postfix
//
// A repeated key in a key/value file: postmap keeps the first entry,
// larkpost the last; both warn. Lines Postfix skips with a warning (a
// line without a value, a rule with a bad pattern) are errors. Patterns
// are RE2, as described above. Only file, inline, static, pgsql and
// sqlite tables exist: no LDAP, MySQL, memcache, socketmap, tcp or
// unionmap tables, and no proxymap process. A pgsql or sqlite
// configuration file must be a path (Postfix's main.cf-prefix form is
// not supported); larkpost tries pgsql hosts in order where Postfix picks
// at random; and larkpost caches answers (cache_ttl). Keys are folded with Unicode lower-casing, as Postfix
// does when SMTPUTF8 is on.
package maps
