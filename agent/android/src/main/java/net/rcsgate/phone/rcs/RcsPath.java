package net.rcsgate.phone.rcs;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.logging.Level;
import java.util.logging.Logger;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.MessagingPath;
import net.rcsgate.phone.core.Result;
import net.rcsgate.phone.sms.SendLog;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * RCS (and whatever the messaging app picks for the chat) through the phone's own messaging app.
 * Matrix replies go out through the conversation's live reply action (the app then sends over RCS
 * when the chat is RCS, SMS otherwise), else, for a number, through the compose screen
 * (ComposeDriver). A Matrix read marks the conversation read through its notification's action,
 * when the person allows it. Every send is recorded in a SendLog first, so one asked for again is
 * answered from there and never goes out twice.
 *
 * <p>Its caps say what this route can do and no more: text, in 1:1 and existing group chats; no
 * files, replies (quotes), reactions, edits, deletes, typing, receipts: the app's notification and
 * compose screen give no way to do them, so the bridge refuses them in Matrix instead.
 */
public final class RcsPath implements MessagingPath {
    public static final String TRANSPORT = "rcs";

    /** What the platform and the person's settings say right now. */
    public interface Platform {
        /** Notification access is granted and the listener is connected. */
        boolean listening();

        /** The accessibility service is on: new chats can be started through the compose screen. */
        boolean composing();

        /** The person lets Matrix reads mark conversations read on the phone. */
        boolean markRead();

        /** The messaging app to compose in: the default SMS app if we know it, else one installed. */
        MessagingApp composeApp();
    }

    public interface Clock {
        long now();
    }

    private static final Logger LOG = Logger.getLogger("rcsgate.rcs");

    private final Platform platform;
    private final Replies replies;
    private final Incoming incoming;
    private final ComposeDriver compose;
    private final SendLog log;
    private final Clock clock;
    /** Results waiting for a compose job started by this process, by send id. */
    private final Map<String, List<Result>> waiting = new HashMap<>();

    public RcsPath(Platform platform, Replies replies, Incoming incoming, ComposeDriver compose, SendLog log, Clock clock) {
        this.platform = platform;
        this.replies = replies;
        this.incoming = incoming;
        this.compose = compose;
        this.log = log;
        this.clock = clock;
    }

    @Override
    public String name() {
        return "rcs";
    }

    @Override
    public Map<String, JSONObject> caps() {
        if (!platform.listening() && !platform.composing()) return Collections.emptyMap();
        Map<String, JSONObject> m = new LinkedHashMap<>();
        JSONObject c = new JSONObject();
        try {
            c.put("groups", true); // answering existing group chats through their notification
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        m.put(TRANSPORT, c);
        return m;
    }

    @Override
    public List<Integer> sims() {
        return Collections.emptyList(); // the messaging app picks the SIM of the conversation
    }

    /**
     * Whether this path should carry ev although the chat names no transport: chats only the
     * messaging app can reach (known by name only, groups it showed, a live reply action), and
     * numbers when new chats may go through its compose screen.
     */
    @Override
    public boolean prefers(Event ev) {
        String t = ev.transport();
        if (!t.isEmpty() && !t.equals(TRANSPORT)) return false;
        String chat = ev.chat();
        if (Event.KIND_READ.equals(ev.kind())) return replies.get(chat) != null;
        if (replies.get(chat) != null || chat.startsWith("c:")) return true;
        if (chat.startsWith("g:")) return incoming.knowsGroup(chat);
        return platform.composing() && Numbers.parse(chat) != null;
    }

    @Override
    public void typing(String chat, boolean active, Result result) {
        result.fail(true, "typing is not shown through the phone's messaging app");
    }

    @Override
    public void send(Event ev, Result result) {
        String kind = ev.kind();
        if (Event.KIND_READ.equals(kind)) {
            markRead(ev.chat(), result);
            return;
        }
        if (!Event.KIND_TEXT.equals(kind)) {
            result.fail(true, kind + " is not supported through the phone's messaging app: rcsgate can only type text into it");
            return;
        }
        String text = ev.text();
        if (text.trim().isEmpty()) {
            result.fail(true, "empty message: nothing to send");
            return;
        }
        String id = ev.id();
        String chat = ev.chat();
        Replies.Entry live = replies.get(chat);
        synchronized (this) {
            SendLog.Rec rec = log.get(id);
            if (rec != null && answerFrom(rec, result)) return;
            if (live != null && live.reply != null) {
                try {
                    log.start(id, chat, 1, clock.now());
                } catch (IOException e) {
                    LOG.log(Level.SEVERE, "send log not written; not sending", e);
                    result.fail(false, "the phone could not record the send (storage full?)");
                    return;
                }
                try {
                    live.reply.fire(text);
                    incoming.replied(chat, text, clock.now());
                    log.sent(id);
                    result.ok();
                    return;
                } catch (Exception e) {
                    // The app cancelled the action (notification gone, app updated): nothing went out.
                    LOG.fine("reply action failed: " + e.getClass().getSimpleName());
                    replies.remove(chat);
                    forget(id);
                }
            }
        }
        composeSend(ev, result);
    }

    /** Sends through the compose screen; only numbers can be composed to. */
    private void composeSend(Event ev, Result result) {
        String chat = ev.chat();
        String number = Numbers.parse(chat);
        if (number == null) {
            String what = chat.startsWith("g:") ? "this group" : "this chat";
            result.fail(true, "the messaging app's notification for " + what + " is gone, and rcsgate can only start chats with a number; "
                    + "answer on the phone (the next message in it makes it reachable again)");
            return;
        }
        if (!platform.composing()) {
            result.fail(true, "no notification to answer, and rcsgate's accessibility service is off: turn it on in the rcsgate app to start chats in the messaging app");
            return;
        }
        String appPkg = replies.appOf(chat);
        MessagingApp app = appPkg != null ? MessagingApp.of(appPkg) : null;
        if (app == null) app = platform.composeApp();
        if (app == null) {
            result.fail(true, "neither Google Messages nor Samsung Messages is installed on the phone");
            return;
        }
        final String id = ev.id();
        final String text = ev.text();
        synchronized (this) {
            List<Result> rs = waiting.get(id);
            if (rs != null) {
                rs.add(result); // asked again while it runs: the same answer for both
                return;
            }
            rs = new ArrayList<>();
            rs.add(result);
            waiting.put(id, rs);
        }
        compose.submit(new ComposeDriver.Job(id, app, number, text, () -> {
            try {
                synchronized (RcsPath.this) {
                    log.start(id, chat, 1, clock.now());
                }
                return true;
            } catch (IOException e) {
                LOG.log(Level.SEVERE, "send log not written; not sending", e);
                return false;
            }
        }, new ComposeDriver.Outcome() {
            @Override
            public void sent() {
                incoming.replied(chat, text, clock.now());
                synchronized (RcsPath.this) {
                    try {
                        log.sent(id);
                    } catch (IOException e) {
                        LOG.log(Level.SEVERE, "send log not written", e);
                    }
                }
                for (Result r : take(id)) r.ok();
            }

            @Override
            public void failed(boolean permanent, boolean pressed, String reason) {
                synchronized (RcsPath.this) {
                    try {
                        if (pressed || permanent) log.failed(id, reason);
                        else log.forget(id);
                    } catch (IOException e) {
                        LOG.log(Level.SEVERE, "send log not written", e);
                    }
                }
                for (Result r : take(id)) r.fail(permanent, reason);
            }
        }));
    }

    private synchronized List<Result> take(String id) {
        List<Result> rs = waiting.remove(id);
        return rs == null ? Collections.<Result>emptyList() : rs;
    }

    /** Answers a send asked for again from its record; false if it must be sent. */
    private boolean answerFrom(SendLog.Rec rec, Result result) {
        if (SendLog.answer(rec, result)) return true;
        if (waiting.containsKey(rec.id)) return false; // the compose job still runs: composeSend joins it
        // Started by an earlier run of the app that died before the outcome was known.
        try {
            log.failed(rec.id, SendLog.UNKNOWN_OUTCOME);
        } catch (IOException e) {
            LOG.log(Level.SEVERE, "send log not written", e);
        }
        result.fail(true, SendLog.UNKNOWN_OUTCOME);
        return true;
    }

    private void forget(String id) {
        try {
            log.forget(id);
        } catch (IOException e) {
            LOG.log(Level.SEVERE, "send log not written", e);
        }
    }

    /** A Matrix read: the conversation's mark-as-read action, when allowed and there is one. */
    private void markRead(String chat, Result result) {
        Replies.Entry live = replies.get(chat);
        if (!platform.markRead() || live == null || live.markRead == null) {
            result.ok(); // nothing to mark (no unread notification), or the person does not want it
            return;
        }
        try {
            live.markRead.fire(null);
        } catch (Exception e) {
            LOG.fine("mark-as-read action failed: " + e.getClass().getSimpleName());
        }
        result.ok(); // best effort either way: a read marker never waits or fails in Matrix
    }
}
