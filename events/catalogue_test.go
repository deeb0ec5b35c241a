package events_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/anchorage-pin/anchorage/events"
)

// TestCatalogueStreamSubjects: the stream table of docs/events.md lists exactly events.StreamSubjects, in order, so a
// subject space added or dropped in code is reflected in the catalogue.
func TestCatalogueStreamSubjects(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	got, err := docStreamSubjects(string(doc))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, events.StreamSubjects) {
		t.Errorf("docs/events.md lists stream subjects %q; events.StreamSubjects is %q", got, events.StreamSubjects)
	}
}

var subjectSpaceRE = regexp.MustCompile("`([a-z]+\\.>)`")

// docStreamSubjects extracts the subject spaces from the "| Subjects |" row of the stream table.
func docStreamSubjects(doc string) ([]string, error) {
	for line := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(line, "| Subjects |") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 3 {
			break
		}
		var out []string
		for _, m := range subjectSpaceRE.FindAllStringSubmatch(cells[2], -1) {
			out = append(out, m[1])
		}
		return out, nil
	}
	return nil, os.ErrNotExist
}

func TestDocStreamSubjects(t *testing.T) {
	t.Parallel()
	doc := "x\n| Name | `ANCHORAGE` | |\n| Subjects | `orgs.>` `obs.>` (`events.StreamSubjects`) | `nodes.>` is reserved |\n"
	got, err := docStreamSubjects(doc)
	if err != nil || !slices.Equal(got, []string{"orgs.>", "obs.>"}) {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := docStreamSubjects("no table"); err == nil {
		t.Error("a doc without the row passed")
	}
}
