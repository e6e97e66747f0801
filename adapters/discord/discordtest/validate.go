package discordtest

import (
	"fmt"
	"net/http"
	"regexp"
	"unicode/utf8"
)

// Discord's documented limits on what a message may carry.
const (
	maxContent          = 2000
	maxEmbeds           = 10
	maxEmbedTitle       = 256
	maxEmbedDescription = 4096
	maxEmbedFields      = 25
	maxFieldName        = 256
	maxFieldValue       = 1024
	maxEmbedTotal       = 6000
	maxRows             = 5
	maxRowButtons       = 5
	maxCustomID         = 100
	maxLabel            = 80
	maxURL              = 512
)

func runes(s string) int { return utf8.RuneCountInString(s) }

// validate checks a message's final state the way Discord checks a create or an edit.
func validate(m *Message) *apiError {
	if runes(m.Content) > maxContent {
		return invalidForm("content", "BASE_TYPE_MAX_LENGTH", fmt.Sprintf("Must be %d or fewer in length.", maxContent))
	}
	if m.Content == "" && len(m.Embeds) == 0 && len(m.Attachments) == 0 && m.Flags&flagLoading == 0 {
		return errEmptyMessage
	}
	if len(m.Embeds) > maxEmbeds {
		return invalidForm("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
	}
	total := 0
	for i, e := range m.Embeds {
		field := fmt.Sprintf("embeds.%d", i)
		switch {
		case runes(e.Title) > maxEmbedTitle:
			return invalidForm(field+".title", "BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")
		case runes(e.Description) > maxEmbedDescription:
			return invalidForm(field+".description", "BASE_TYPE_MAX_LENGTH", "Must be 4096 or fewer in length.")
		case len(e.Fields) > maxEmbedFields:
			return invalidForm(field+".fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
		}
		total += runes(e.Title) + runes(e.Description)
		for j, f := range e.Fields {
			ff := fmt.Sprintf("%s.fields.%d", field, j)
			if f.Name == "" || runes(f.Name) > maxFieldName {
				return invalidForm(ff+".name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 256 in length.")
			}
			if f.Value == "" || runes(f.Value) > maxFieldValue {
				return invalidForm(ff+".value", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 1024 in length.")
			}
			total += runes(f.Name) + runes(f.Value)
		}
		if e.Footer != nil {
			total += runes(e.Footer.Text)
		}
	}
	if total > maxEmbedTotal {
		return invalidForm("embeds", "BASE_TYPE_MAX_LENGTH", "Embed size exceeds maximum size of 6000")
	}
	return validateComponents(m.Components)
}

func validateComponents(rows []Component) *apiError {
	if len(rows) > maxRows {
		return invalidForm("components", "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
	}
	ids := map[string]bool{}
	for i, row := range rows {
		field := fmt.Sprintf("components.%d", i)
		if row.Type != ComponentActionRow {
			return invalidForm(field+".type", "UNION_TYPE_CHOICES", "Value of field \"type\" must be one of (1,).")
		}
		if len(row.Components) == 0 || len(row.Components) > maxRowButtons {
			return invalidForm(field+".components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
		}
		for j, b := range row.Components {
			bf := fmt.Sprintf("%s.components.%d", field, j)
			if b.Type != ComponentButton {
				return invalidForm(bf+".type", "UNION_TYPE_CHOICES", "This test server knows buttons only.")
			}
			if b.Label == "" && b.Emoji == nil {
				return invalidForm(bf, "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED", "A label or an emoji is required.")
			}
			if runes(b.Label) > maxLabel {
				return invalidForm(bf+".label", "BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")
			}
			switch {
			case b.Style == ButtonLink:
				if b.URL == "" || b.CustomID != "" {
					return invalidForm(bf, "BUTTON_COMPONENT_URL_REQUIRED", "A link button needs a url and no custom_id.")
				}
				if runes(b.URL) > maxURL {
					return invalidForm(bf+".url", "BASE_TYPE_MAX_LENGTH", "Must be 512 or fewer in length.")
				}
			case b.Style >= ButtonPrimary && b.Style <= ButtonDanger:
				if b.CustomID == "" || runes(b.CustomID) > maxCustomID || b.URL != "" {
					return invalidForm(bf+".custom_id", "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED", "A custom_id of 1 to 100 characters is required.")
				}
				if ids[b.CustomID] {
					return invalidForm(bf+".custom_id", "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated")
				}
				ids[b.CustomID] = true
			default:
				return invalidForm(bf+".style", "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5}.")
			}
		}
	}
	return nil
}

var commandName = regexp.MustCompile(`^[-_\p{Ll}\p{N}]{1,32}$`)

// validateCommands checks a bulk overwrite of chat-input commands as Discord does.
func validateCommands(cmds []map[string]any) *apiError {
	bad := func(field, msg string) *apiError {
		e := invalidForm(field, "APPLICATION_COMMAND_INVALID", msg)
		e.status = http.StatusBadRequest
		return e
	}
	for i, c := range cmds {
		field := fmt.Sprintf("%d", i)
		name, _ := c["name"].(string)
		if !commandName.MatchString(name) {
			return bad(field+".name", "Command name is invalid")
		}
		desc, _ := c["description"].(string)
		if runes(desc) < 1 || runes(desc) > 100 {
			return bad(field+".description", "Must be between 1 and 100 in length.")
		}
		if err := validateOptions(field, c["options"], 0, bad); err != nil {
			return err
		}
	}
	return nil
}

func validateOptions(field string, raw any, depth int, bad func(string, string) *apiError) *apiError {
	opts, _ := raw.([]any)
	if len(opts) > 25 {
		return bad(field+".options", "Must be 25 or fewer in length.")
	}
	for j, o := range opts {
		om, _ := o.(map[string]any)
		of := fmt.Sprintf("%s.options.%d", field, j)
		name, _ := om["name"].(string)
		if !commandName.MatchString(name) {
			return bad(of+".name", "Option name is invalid")
		}
		desc, _ := om["description"].(string)
		if runes(desc) < 1 || runes(desc) > 100 {
			return bad(of+".description", "Must be between 1 and 100 in length.")
		}
		typ, _ := om["type"].(float64)
		if typ < 1 || typ > 11 {
			return bad(of+".type", "Value must be one of (1..11).")
		}
		if typ <= 2 {
			if depth > 1 {
				return bad(of, "Sub-commands nest two levels at most.")
			}
			if err := validateOptions(of, om["options"], depth+1, bad); err != nil {
				return err
			}
		}
		if ch, _ := om["choices"].([]any); len(ch) > 25 {
			return bad(of+".choices", "Must be 25 or fewer in length.")
		}
	}
	return nil
}
