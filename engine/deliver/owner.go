package deliver

import (
	"strconv"
	"strings"
)

// A Route's Owner is an account name, or, for a virtual mailbox owned by
// numbers (virtual_uid_maps, virtual_gid_maps, virtual_mailbox_owner =
// "UID:GID"), "#UID:GID": no account name starts with "#", so the two
// never meet, and the numbers need no passwd entry.

// NumericOwner is the Owner form of a mailbox owned by uid and gid.
func NumericOwner(uid, gid int) string {
	return "#" + strconv.Itoa(uid) + ":" + strconv.Itoa(gid)
}

// ParseNumericOwner reads what NumericOwner writes: "#", then decimal
// uid and gid (no sign, no leading zeros, below 2^31) separated by ":".
// ok is false for an account name and for anything malformed.
func ParseNumericOwner(s string) (uid, gid int, ok bool) {
	if len(s) < 4 || s[0] != '#' {
		return 0, 0, false
	}
	u, g, found := strings.Cut(s[1:], ":")
	if !found {
		return 0, 0, false
	}
	uid, ok1 := parseID(u)
	gid, ok2 := parseID(g)
	if !ok1 || !ok2 {
		return 0, 0, false
	}
	return uid, gid, true
}

// parseID reads a decimal id in its one canonical spelling.
func parseID(s string) (int, bool) {
	if s == "" || len(s) > 10 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n >= 1<<31 {
		return 0, false
	}
	return int(n), true
}
