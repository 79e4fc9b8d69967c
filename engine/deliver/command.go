package deliver

import "strings"

// expandArgv fills pipe(8)'s macros (${sender}, ${recipient}, ...) into a
// transport's command words, in one pass: a value is never scanned for
// macros again, so an address like "${sender}"@example.com stays itself.
// Unknown macros are left as written.
//
// Like Postfix with allow_min_user = no, a word that would start with "-"
// because of a value taken from an address is refused: the command could
// not tell it from an option ("-oProxyCommand=..."). ok is false then and
// bad names the macro.
func expandArgv(words []string, vars map[string]string, allowMinUser bool) (argv []string, bad string, ok bool) {
	for _, w := range words {
		var b strings.Builder
		for i := 0; i < len(w); {
			j := strings.Index(w[i:], "${")
			if j < 0 {
				b.WriteString(w[i:])
				break
			}
			b.WriteString(w[i : i+j])
			i += j
			end := strings.IndexByte(w[i:], '}')
			if end < 0 {
				b.WriteString(w[i:])
				break
			}
			name := w[i+2 : i+end]
			v, known := vars[name]
			if !known {
				b.WriteString(w[i : i+end+1])
			} else {
				if b.Len() == 0 && strings.HasPrefix(v, "-") && !allowMinUser {
					return nil, name, false
				}
				b.WriteString(v)
			}
			i += end + 1
		}
		argv = append(argv, b.String())
	}
	return argv, "", true
}

// Dashed reports an address value that a shell command could take for an
// option: alias and .forward pipes get the addresses in the environment
// (SENDER, RECIPIENT, ...), and scripts pass those on as arguments.
func Dashed(values ...string) string {
	for _, v := range values {
		if strings.HasPrefix(v, "-") {
			return v
		}
	}
	return ""
}

// Command is a pipe transport's command line for a message from sender,
// as delivery runs it (larkpost trace shows it too); see expandArgv.
func (rt *Route) Command(sender string) (argv []string, bad string, ok bool) {
	vars := make(map[string]string, len(rt.Vars)+1)
	for k, v := range rt.Vars {
		vars[k] = v
	}
	// pipe(8): the null sender is passed as MAILER-DAEMON.
	vars["sender"] = nullSender(sender)
	return expandArgv(rt.Argv, vars, rt.AllowMinUser)
}

func nullSender(s string) string {
	if s == "" {
		return "MAILER-DAEMON"
	}
	return s
}
