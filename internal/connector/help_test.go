package connector

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// Every command the bot's help names, and the !rcs prefix, are in the
// README's section on talking to the bot.
func TestHelpCommandsAreInREADME(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	start := strings.Index(readme, "## Talking to the bridge bot")
	if start < 0 {
		t.Fatal(`README has no "## Talking to the bridge bot" section`)
	}
	section := readme[start:]
	if end := strings.Index(section[3:], "\n## "); end > 0 {
		section = section[:end+3]
	}
	if !strings.Contains(section, "`!rcs") {
		t.Error("the README's bot section does not say commands start with !rcs outside DMs")
	}
	cmd := regexp.MustCompile("`(?:!rcs )?([a-z][a-z-]+)")
	seen := map[string]bool{}
	for _, m := range cmd.FindAllStringSubmatch(helpText+helpAdmin, -1) {
		name := m[1]
		if seen[name] {
			continue
		}
		seen[name] = true
		if !regexp.MustCompile("`(!rcs )?" + regexp.QuoteMeta(name) + "[` ]").MatchString(section) {
			t.Errorf("help names `%s`, the README's bot section does not", name)
		}
	}
	if len(seen) < 8 {
		t.Fatalf("found only %d commands in the help text: the pattern is wrong", len(seen))
	}
}
