package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/larkpost/larkpost/rules"
)

const settingsFile = "../../docs/reference/settings.md"

func TestSettingsReference(t *testing.T) {
	got, err := os.ReadFile(settingsFile)
	if err != nil {
		t.Fatalf("docs/reference/settings.md is missing: run go generate ./... (%v)", err)
	}
	if !bytes.Equal(got, settingsReference()) {
		t.Fatal("docs/reference/settings.md is stale: run go generate ./...")
	}
}

func TestSettingsReferenceHasEverySetting(t *testing.T) {
	ref := string(settingsReference())
	for _, name := range rules.SettingNames() {
		if !strings.Contains(ref, "\n### "+name+"\n") {
			t.Errorf("no ### %s heading", name)
		}
		if !strings.Contains(ref, "["+name+"](#"+name+")") {
			t.Errorf("no index link to %s", name)
		}
	}
}
