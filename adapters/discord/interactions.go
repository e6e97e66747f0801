package discord

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/nightona/nightona/session"
)

// Interaction answers an interaction Discord posted to the application's interactions endpoint
// (whose signature the caller checked): it returns the response body. It returns within
// Config.AnswerWithin, well inside Discord's three seconds: work that takes longer is answered
// with a deferral and finished in the background, then shown by editing the answer.
func (a *Adapter) Interaction(ctx context.Context, body []byte) ([]byte, error) {
	var i discordgo.Interaction
	if err := json.Unmarshal(body, &i); err != nil {
		return nil, fmt.Errorf("decode an interaction: %w", err)
	}
	if i.Type == discordgo.InteractionPing {
		return []byte(`{"type":1}`), nil
	}
	answered := make(chan struct{})
	defer close(answered) // the HTTP answer goes right after this returns
	resp := a.interact(ctx, &i, body, time.Now(), answered)
	return json.Marshal(resp)
}

// onGatewayInteraction answers an INTERACTION_CREATE from the Gateway with a callback.
func (a *Adapter) onGatewayInteraction(ctx context.Context, raw json.RawMessage) {
	received := time.Now()
	var i discordgo.Interaction
	if err := json.Unmarshal(raw, &i); err != nil {
		a.log.Warn("an INTERACTION_CREATE that does not decode", "err", err)
		return
	}
	// Every replica's Gateway session gets it, and the first to claim it answers (the
	// session manager takes a Stop or an answer to the replica that drives the session).
	if first, err := a.store.Once(ctx, keyInteraction+i.ID, deliveryTTL); err == nil && !first {
		return
	}
	answered := make(chan struct{})
	defer close(answered)
	resp := a.interact(ctx, &i, raw, received, answered)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := a.api.callback(cctx, i.ID, i.Token, resp); err != nil && apiCode(err) != 40060 { // 40060: answered already
		a.log.Warn("could not answer an interaction", "interaction", i.ID, "err", err)
	}
}

// reply is what an interaction's work shows.
type reply struct {
	content    string
	embeds     []*discordgo.MessageEmbed
	components []discordgo.MessageComponent
	ephemeral  bool
	// update edits the message whose button was clicked instead of answering with a new one.
	update bool
	// silent shows nothing: the thread's own rendering shows the outcome.
	silent bool
}

func (r reply) data() *discordgo.InteractionResponseData {
	d := &discordgo.InteractionResponseData{Content: r.content, Embeds: r.embeds, Components: r.components,
		AllowedMentions: noMentions}
	if r.ephemeral {
		d.Flags = discordgo.MessageFlagsEphemeral
	}
	if d.Components == nil {
		d.Components = []discordgo.MessageComponent{}
	}
	if d.Embeds == nil {
		d.Embeds = []*discordgo.MessageEmbed{}
	}
	return d
}

func (r reply) message() *message {
	m := &message{Content: &r.content, AllowedMentions: noMentions}
	embeds, components := r.embeds, r.components
	if embeds == nil {
		embeds = []*discordgo.MessageEmbed{}
	}
	if components == nil {
		components = []discordgo.MessageComponent{}
	}
	m.Embeds, m.Components = &embeds, &components
	if r.ephemeral {
		m.Flags = discordgo.MessageFlagsEphemeral
	}
	return m
}

// now answers at once.
func now(r reply) *discordgo.InteractionResponse {
	switch {
	case r.silent:
		return &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredMessageUpdate}
	case r.update:
		return &discordgo.InteractionResponse{Type: discordgo.InteractionResponseUpdateMessage, Data: r.data()}
	}
	return &discordgo.InteractionResponse{Type: discordgo.InteractionResponseChannelMessageWithSource, Data: r.data()}
}

func tell(text string) *discordgo.InteractionResponse {
	return now(reply{content: text, ephemeral: true})
}

// answer runs work and answers with its reply if it is done within AnswerWithin of the
// interaction's arrival; otherwise it answers with a deferral (ephemeral says whether a
// command's eventual answer is for the user's eyes only) and delivers the reply when work is
// done, once the deferral has gone.
func (a *Adapter) answer(ix *incoming, ephemeral bool, work func(ctx context.Context) reply) *discordgo.InteractionResponse {
	i := ix.Interaction
	done := make(chan reply, 1)
	a.background(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		done <- work(ctx)
	})
	t := time.NewTimer(time.Until(ix.until))
	defer t.Stop()
	select {
	case r := <-done:
		return now(r)
	case <-t.C:
	}
	a.background(func(ctx context.Context) {
		r := <-done
		<-ix.answered
		a.deliverLate(ctx, i, r)
	})
	if i.Type == discordgo.InteractionMessageComponent {
		return &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredMessageUpdate}
	}
	resp := &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredChannelMessageWithSource,
		Data: &discordgo.InteractionResponseData{}}
	if ephemeral {
		resp.Data.Flags = discordgo.MessageFlagsEphemeral
	}
	return resp
}

// deliverLate shows the reply of work that outlasted its deferral: an edit of the deferred
// answer (or of the clicked message), or a follow-up.
func (a *Adapter) deliverLate(ctx context.Context, i *discordgo.Interaction, r reply) {
	if r.silent {
		return
	}
	appID, _ := a.ids()
	if appID == "" {
		appID = i.AppID
	}
	for attempt := 1; ; attempt++ {
		var err error
		switch {
		case i.Type == discordgo.InteractionMessageComponent && !r.update:
			err = a.api.followup(ctx, appID, i.Token, r.message())
		default:
			m := r.message()
			m.Flags = 0 // an answer's visibility is set when it is deferred, not on edit
			err = a.api.editOriginal(ctx, appID, i.Token, m)
		}
		// Discord may not have taken the deferral yet when the work is quick after it.
		if err == nil || attempt == 3 || (apiCode(err) != 10015 && apiCode(err) != codeUnknownMessage) {
			if err != nil {
				a.log.Warn("could not deliver an interaction's late answer", "interaction", i.ID, "err", err)
			}
			return
		}
		if sleep(ctx, 300*time.Millisecond) != nil {
			return
		}
	}
}

// incoming is an interaction being answered.
type incoming struct {
	*discordgo.Interaction
	raw  []byte
	user string // "discord:<id>"
	// until is when the answer must go, whatever is done by then; answered is closed once
	// it has gone.
	until    time.Time
	answered <-chan struct{}
}

// interact answers one interaction.
func (a *Adapter) interact(ctx context.Context, i *discordgo.Interaction, raw []byte, received time.Time, answered <-chan struct{}) *discordgo.InteractionResponse {
	ix := &incoming{Interaction: i, raw: raw, user: interactionUser(i), until: received.Add(a.cfg.AnswerWithin), answered: answered}
	if ix.user == "" {
		return tell("I couldn't tell who you are.")
	}
	// Store lookups get a second at most: the answer must go within three.
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	switch i.Type {
	case discordgo.InteractionApplicationCommand:
		return a.command(qctx, ix)
	case discordgo.InteractionMessageComponent:
		return a.component(qctx, ix)
	}
	return tell("I don't know that kind of interaction.")
}

func interactionUser(i *discordgo.Interaction) string {
	switch {
	case i.Member != nil && i.Member.User != nil:
		return user(i.Member.User.ID)
	case i.User != nil:
		return user(i.User.ID)
	}
	return ""
}

// sessionHere returns the thread key and session of the channel an interaction came from.
func (a *Adapter) sessionHere(ctx context.Context, channelID string) (string, *session.Session, error) {
	thread, err := a.threadOf(ctx, channelID)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", session.ErrStoreDown, err)
	}
	if thread == "" {
		return "", nil, session.ErrNotFound
	}
	sess, err := a.sessions.Session(ctx, thread)
	if err != nil {
		return thread, nil, err
	}
	return thread, sess, nil
}

func (a *Adapter) mayManage(sess *session.Session, u string) bool {
	return sess.Owner == u || a.sessions.IsAdmin(u)
}

func (a *Adapter) refusal(sess *session.Session, what string) *discordgo.InteractionResponse {
	return tell("🔒 Only " + mention(sess.Owner) + ", who started this session, or an admin can " + what + ".")
}

// component answers a click on one of the bot's buttons.
func (a *Adapter) component(ctx context.Context, ix *incoming) *discordgo.InteractionResponse {
	i, u := ix.Interaction, ix.user
	id := i.MessageComponentData().CustomID
	if !strings.HasPrefix(id, "nightona:") {
		return tell("That button isn't mine.")
	}
	thread, sess, err := a.sessionHere(ctx, i.ChannelID)
	if err != nil {
		return tell(userMessage(a.log, err))
	}
	switch {
	case strings.HasPrefix(id, idStop), id == strings.TrimSuffix(idStop, ":"):
		// The button names its turn's prompt (one from before they did stops the current turn).
		promptID := strings.TrimPrefix(id, idStop)
		if promptID == id {
			promptID = ""
		}
		if !a.mayManage(sess, u) {
			return a.refusal(sess, "stop this turn")
		}
		return a.answer(ix, true, func(ctx context.Context) reply {
			if err := a.sessions.Interrupt(ctx, thread, promptID); err != nil {
				return reply{content: userMessage(a.log, err), ephemeral: true}
			}
			a.log.Info("turn stopped from Discord", "thread", thread, "user", u)
			return reply{silent: true} // the turn's result shows it
		})
	case strings.HasPrefix(id, idAllow), strings.HasPrefix(id, idDeny):
		allow := strings.HasPrefix(id, idAllow)
		req := strings.TrimPrefix(strings.TrimPrefix(id, idAllow), idDeny)
		if !a.mayManage(sess, u) {
			return a.refusal(sess, "answer Claude's requests in this thread")
		}
		return a.answer(ix, true, func(ctx context.Context) reply {
			if err := a.sessions.Decide(ctx, thread, req, u, allow, ""); err != nil {
				return reply{content: userMessage(a.log, err), ephemeral: true}
			}
			a.log.Info("permission decided from Discord", "thread", thread, "user", u, "allow", allow)
			return decided(i.Message, u, allow)
		})
	case strings.HasPrefix(id, idCancel):
		promptID := strings.TrimPrefix(id, idCancel)
		return a.answer(ix, true, func(ctx context.Context) reply {
			ok, err := a.sessions.CancelPrompt(ctx, thread, promptID, u)
			switch {
			case err != nil:
				return reply{content: userMessage(a.log, err), ephemeral: true}
			case !ok:
				return reply{content: "Too late: that prompt has started or was cancelled already.", ephemeral: true}
			}
			return reply{silent: true}
		})
	case strings.HasPrefix(id, idDestroy):
		if strings.TrimPrefix(id, idDestroy) != "yes" {
			return now(reply{update: true, content: "Kept. Nothing was deleted."})
		}
		if !a.mayManage(sess, u) {
			return a.refusal(sess, "destroy this session")
		}
		return a.answer(ix, true, func(ctx context.Context) reply {
			if err := a.sessions.Destroy(ctx, thread, u); err != nil {
				return reply{update: true, content: userMessage(a.log, err)}
			}
			a.log.Info("session destroyed from Discord", "thread", thread, "user", u)
			text := "🗑️ " + mention(u) + " destroyed this thread's session and its sandbox. A new message here starts a fresh one."
			if _, err := a.api.send(ctx, i.ChannelID, &message{Content: &text, AllowedMentions: noMentions}); err != nil {
				a.log.Warn("could not announce a destroyed session", "thread", thread, "err", err)
			}
			return reply{update: true, content: "Destroyed."}
		})
	}
	return tell("That button is from another version of me; it does nothing now.")
}

// decided is a permission request's message once answered: its buttons replaced by the
// decision and who made it. The thread's rendering writes the same when the decision reaches
// the log; this shows it at once.
func decided(m *discordgo.Message, u string, allow bool) reply {
	if m == nil {
		return reply{silent: true}
	}
	verdict := "🚫 Denied by " + mention(u)
	if allow {
		verdict = "✅ Approved by " + mention(u)
	}
	lines := strings.Split(m.Content, "\n")
	for j, l := range lines {
		if strings.HasPrefix(l, "-# Only ") {
			lines[j] = verdict
		}
	}
	var rows []discordgo.MessageComponent
	for _, c := range m.Components {
		row, ok := c.(*discordgo.ActionsRow)
		if !ok || !hasCustomID(row, idAllow) {
			rows = append(rows, c)
		}
	}
	return reply{update: true, content: strings.Join(lines, "\n"), embeds: m.Embeds, components: rows}
}

func hasCustomID(row *discordgo.ActionsRow, prefix string) bool {
	for _, c := range row.Components {
		if b, ok := c.(*discordgo.Button); ok && strings.HasPrefix(b.CustomID, prefix) {
			return true
		}
	}
	return false
}
