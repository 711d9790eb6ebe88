package console

import (
	"fmt"
	"html/template"
)

// pageNames are the pages, each a template file beside layout.html.
var pageNames = []string{"certificates", "nodes", "rollouts", "bindings", "problem"}

// parsePages parses the layout once per page, each with its own content.
func parsePages() (map[string]*template.Template, error) {
	layout, err := template.ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("console: parsing the layout: %w", err)
	}
	out := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: parsing page %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}
