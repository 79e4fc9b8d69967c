package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestImport runs `larkpost import postfix` for its exit statuses: 0, 3
// (hand work), 1 (cannot import) and 2 (usage, a non-empty folder).
func TestImport(t *testing.T) {
	clean := t.TempDir()
	os.WriteFile(filepath.Join(clean, "main.cf"), []byte("compatibility_level = 3.6\nmyhostname = mx.example.com\nmydestination = mx.example.com\nmynetworks = 127.0.0.0/8\nlocal_recipient_maps =\nalias_maps =\n"), 0o644)
	os.WriteFile(filepath.Join(clean, "master.cf"), []byte("smtp inet n - y - - smtpd\n"), 0o644)
	work := t.TempDir()
	os.WriteFile(filepath.Join(work, "main.cf"), []byte("compatibility_level = 3.6\nmyhostname = mx.example.com\nmydestination = mx.example.com\nmynetworks = 127.0.0.0/8\nlocal_recipient_maps =\nalias_maps =\ncontent_filter = amavis:[127.0.0.1]:10024\n"), 0o644)
	broken := t.TempDir()
	os.WriteFile(filepath.Join(broken, "main.cf"), []byte("myhostname = x\n  \nbroken line\n"), 0o644)
	out := t.TempDir()
	runCLICases(t, []cliCase{
		{name: "clean", args: []string{"import", "postfix", clean, "-o", filepath.Join(out, "a")}, code: 0, stdout: "Nothing needs hand work"},
		{name: "hand work", args: []string{"import", "postfix", work, "-o", filepath.Join(out, "b")}, code: 3, stdout: "main.cf:7 `content_filter"},
		{name: "not empty", args: []string{"import", "postfix", clean, "-o", filepath.Join(out, "a")}, code: 2, stderr: "not empty"},
		{name: "force", args: []string{"import", "postfix", clean, "-o", filepath.Join(out, "a"), "--force"}, code: 0},
		{name: "no main.cf", args: []string{"import", "postfix", t.TempDir(), "-o", filepath.Join(out, "c")}, code: 1, stderr: "main.cf"},
		{name: "bad main.cf", args: []string{"import", "postfix", broken, "-o", filepath.Join(out, "d")}, code: 1, stderr: "main.cf:3:"},
		{name: "no system", args: []string{"import"}, code: 2, stderr: "usage: larkpost import postfix"},
		{name: "other system", args: []string{"import", "sendmail"}, code: 2, stderr: "want a source system"},
		{name: "extra", args: []string{"import", "postfix", clean, "more"}, code: 2, stderr: "unexpected argument"},
		{name: "help", args: []string{"import", "-h"}, code: 0, stdout: "usage: larkpost import postfix"},
	})
	for _, f := range []string{"larkpost.star", "postfix_import_test.star", "IMPORT-REPORT.md"} {
		if _, err := os.Stat(filepath.Join(out, "a", f)); err != nil {
			t.Errorf("%s not written: %v", f, err)
		}
	}
	// the result passes check and its tests
	cfg := filepath.Join(out, "a", "larkpost.star")
	runCLICases(t, []cliCase{
		{name: "check", args: []string{"check", "-c", cfg}, code: 0, stdout: "ok"},
		{name: "test", args: []string{"test", "-c", cfg, filepath.Join(out, "a", "postfix_import_test.star")}, code: 0, stdout: "0 failed"},
	})
}
