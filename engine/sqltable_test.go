package engine

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"modernc.org/sqlite"

	"github.com/larkpost/larkpost/engine/enginetest"
	"github.com/larkpost/larkpost/queue"
)

// sqlTables writes a SQLite database with a virtual alias table, and two
// table files: good.cf reads it, down.cf names a database that is not
// there, so that every lookup in it fails.
func sqlTables(t *testing.T) (good, down string) {
	t.Helper()
	dir := t.TempDir()
	c, err := sqlite.NewConnector("file:" + filepath.Join(dir, "mail.db"))
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	for _, s := range []string{
		`CREATE TABLE virtual (alias TEXT, target TEXT)`,
		`INSERT INTO virtual VALUES ('info@mx.test', 'bob@mx.test'), ('team@mx.test', 'bob@mx.test'), ('team@mx.test', 'carol@mx.test')`,
	} {
		if _, err := db.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	good, down = filepath.Join(dir, "good.cf"), filepath.Join(dir, "down.cf")
	os.WriteFile(good, []byte("dbpath = mail.db\nquery = SELECT target FROM virtual WHERE alias = '%s'\n"), 0o600)
	os.WriteFile(down, []byte("dbpath = nothere.db\nquery = SELECT target FROM virtual WHERE alias = '%s'\ntimeout = 1s\n"), 0o600)
	return good, down
}

func TestSQLVirtualAlias(t *testing.T) {
	t.Parallel()
	good, _ := sqlTables(t)
	h := start(t, `config(virtual_alias_maps = ["sqlite:`+good+`"], local_recipients = ["ann", "bob", "carol"])`)
	if _, err := send(t, h.addr, "ann@mx.test", []string{"team@mx.test"}, "Subject: sql\r\n\r\nhi\r\n"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob", "carol"} {
		if got := h.waitMailbox(u, 1); len(got) != 1 || !strings.Contains(string(got[0]), "X-Original-To: team@mx.test") {
			t.Errorf("%s: %d messages, want the one to team@", u, len(got))
		}
	}
}

// TestTableFailuresAreTemporary: a table that cannot be read makes the
// reply 451 4.3.0 (Postfix's "Temporary lookup failure") at RCPT and
// MAIL, and defers delivery, where "not found" would have refused the
// recipient as unknown or bounced the message.
func TestTableFailuresAreTemporary(t *testing.T) {
	t.Parallel()
	_, down := sqlTables(t)
	spec := `["sqlite:` + down + `"]`
	for _, setting := range []string{"virtual_alias_maps", "relocated_maps"} {
		t.Run(setting, func(t *testing.T) {
			t.Parallel()
			h := start(t, `config(`+setting+` = `+spec+`)`)
			enginetest.Dialog(t, h.addr, `
				<~ ^220
				-> EHLO c.example
				<+ ^250 LIMITS
				-> MAIL FROM:<a@example.org>
				<- 250 2.1.0 Ok
				-> RCPT TO:<joe@mx.test>
				<- 451 4.3.0 <joe@mx.test>: Temporary lookup failure
				-> QUIT
				<- 221 2.0.0 Bye`)
			if !h.log.WaitFor(`warning: `+setting+`: sqlite:.*down\.cf: lookup "joe@mx\.test": .*nothere\.db`, time.Second) {
				t.Error("no warning naming the setting, the table and the cause")
			}
		})
	}
	t.Run("smtpd_sender_login_maps", func(t *testing.T) {
		t.Parallel()
		h := start(t, `config(smtpd_sender_login_maps = `+spec+`, reject_sender_login_mismatch = True)`)
		enginetest.Dialog(t, h.addr, `
			<~ ^220
			-> EHLO c.example
			<+ ^250 LIMITS
			-> MAIL FROM:<a@example.org>
			<- 451 4.3.0 <a@example.org>: Temporary lookup failure
			-> MAIL FROM:<>
			<- 250 2.1.0 Ok
			-> QUIT
			<- 221 2.0.0 Bye`)
	})
	t.Run("transport_maps", func(t *testing.T) {
		t.Parallel()
		h := start(t, `config(transport_maps = `+spec+`)`)
		if _, err := send(t, h.addr, "ann@mx.test", []string{"bob@mx.test"}, "Subject: x\r\n\r\nhi\r\n"); err != nil {
			t.Fatal(err)
		}
		h.settle()
		var rcpt queue.Rcpt
		var state queue.State
		h.e.Queue().Walk(func(r *queue.Record) bool {
			state, rcpt = r.State, r.Rcpts[0]
			return false
		})
		if state != queue.Deferred || rcpt.State != queue.Pending || rcpt.Last().Status != "4.3.0" || !strings.Contains(rcpt.Last().Reply, "transport_maps") {
			t.Errorf("message %s, recipient %s, last attempt %+v; want deferred with 4.3.0", state, rcpt.State, rcpt.Last())
		}
		if n := len(h.mailbox("bob")) + len(h.mailbox("ann")); n != 0 {
			t.Errorf("%d messages delivered or bounced", n)
		}
	})
	t.Run("canonical_maps", func(t *testing.T) {
		t.Parallel()
		h := start(t, `config(canonical_maps = `+spec+`)`)
		_, err := send(t, h.addr, "ann@mx.test", []string{"bob@mx.test"}, "Subject: x\r\n\r\nhi\r\n")
		if err == nil || !strings.Contains(err.Error(), "451") {
			t.Errorf("sending: %v; want a temporary refusal of the message (451)", err)
		}
		if n := len(h.mailbox("bob")); n != 0 {
			t.Errorf("bob got %d messages", n)
		}
	})
}
