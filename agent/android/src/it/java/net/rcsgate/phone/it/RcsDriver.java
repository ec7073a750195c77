package net.rcsgate.phone.it;

import java.io.File;
import java.io.IOException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import net.rcsgate.phone.core.Inbox;
import net.rcsgate.phone.core.Router;
import net.rcsgate.phone.rcs.ComposeDriver;
import net.rcsgate.phone.rcs.Conversation;
import net.rcsgate.phone.rcs.Incoming;
import net.rcsgate.phone.rcs.MessagingApp;
import net.rcsgate.phone.rcs.Posted;
import net.rcsgate.phone.rcs.RcsPath;
import net.rcsgate.phone.rcs.Replies;
import net.rcsgate.phone.sms.SendLog;
import org.json.JSONObject;

/**
 * PhoneDriver's RCS path (--rcs): the app's real RcsPath, Incoming, Replies and ComposeDriver,
 * with the messaging app faked: notifications are posted by command (fixture JSON, see
 * src/fixtures), their actions report when fired, and the compose screen is a FakeMessagingApp.
 * Commands:
 *
 * <pre>
 *   {"cmd":"post","notification":{…fixture…}}       the messaging app posts (or re-posts) it
 *   {"cmd":"remove","key":"…"}                       the notification goes away
 *   {"cmd":"ui","screen":"google-no-send","locked":false,"connected":true}
 * </pre>
 *
 * Reports: {"ev":"posted","chat","messages"} (the conversation the notification showed), {"ev":"reply",
 * "key","text"} and {"ev":"markread","key"} (an action fired), {"ev":"compose-open","pkg",
 * "number"} and {"ev":"compose-sent","pkg","number","text"} (the fake compose screen).
 */
final class RcsDriver implements RcsPath.Platform {
    final FakeMessagingApp ui = new FakeMessagingApp();
    final Replies replies = new Replies();
    final Incoming incoming;
    final ComposeDriver compose;
    final RcsPath path;
    private final ScheduledExecutorService thread = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r, "rcs");
        t.setDaemon(true);
        return t;
    });

    RcsDriver(File dir, Inbox inbox) throws IOException {
        ui.installed.add(MessagingApp.GOOGLE);
        ui.installed.add(MessagingApp.SAMSUNG);
        ui.screens.put(MessagingApp.GOOGLE, "google-compose");
        ui.screens.put(MessagingApp.SAMSUNG, "samsung-compose");
        ui.showAfter = 2; // the app takes a moment to show its screen
        ui.listen(new FakeMessagingApp.Listener() {
            @Override
            public void opened(String pkg, String number) {
                PhoneDriver.report(PhoneDriver.put(PhoneDriver.put(PhoneDriver.ev("compose-open"), "pkg", pkg), "number", number));
            }

            @Override
            public void sent(FakeMessagingApp.Sent s) {
                JSONObject o = PhoneDriver.ev("compose-sent");
                PhoneDriver.put(o, "pkg", s.pkg);
                PhoneDriver.put(o, "number", s.number);
                PhoneDriver.put(o, "text", s.text);
                PhoneDriver.report(o);
            }
        });
        incoming = new Incoming(dir, inbox, null, null, () -> false,
                (delay, r) -> thread.schedule(r, delay, TimeUnit.MILLISECONDS), System::currentTimeMillis);
        compose = new ComposeDriver(ui, System::currentTimeMillis, (ms, r) -> thread.schedule(r, ms, TimeUnit.MILLISECONDS));
        path = new RcsPath(this, replies, incoming, compose, new SendLog(new File(dir, "rcs-sends.log")), System::currentTimeMillis);
    }

    void addTo(Router router) {
        router.add(path);
    }

    /** Handles an RCS command; false if c is not one. */
    boolean handle(JSONObject c) {
        switch (c.optString("cmd")) {
            case "post": {
                Posted p = Fixtures.posted(c.optJSONObject("notification"), (key, title, reply) -> text -> {
                    JSONObject o = PhoneDriver.ev(reply ? "reply" : "markread");
                    PhoneDriver.put(o, "key", key);
                    if (reply) PhoneDriver.put(o, "text", text);
                    PhoneDriver.report(o);
                });
                thread.execute(() -> {
                    Conversation conv = incoming.posted(p);
                    if (conv != null) replies.posted(p, conv);
                    JSONObject o = PhoneDriver.ev("posted");
                    PhoneDriver.put(o, "chat", conv == null ? "" : conv.chat);
                    PhoneDriver.put(o, "messages", conv == null ? 0 : conv.messages.size());
                    PhoneDriver.report(o);
                });
                return true;
            }
            case "remove": {
                String key = c.optString("key");
                thread.execute(() -> replies.removed(key));
                return true;
            }
            case "ui":
                synchronized (ui) {
                    if (c.has("screen")) ui.screens.put(c.optString("pkg", MessagingApp.GOOGLE), c.optString("screen"));
                    if (c.has("locked")) ui.locked = c.optBoolean("locked");
                    if (c.has("connected")) ui.connected = c.optBoolean("connected");
                }
                PhoneDriver.report(PhoneDriver.ev("ui"));
                return true;
            default:
                return false;
        }
    }

    @Override
    public boolean listening() {
        return true;
    }

    @Override
    public boolean composing() {
        synchronized (ui) {
            return ui.connected;
        }
    }

    @Override
    public boolean markRead() {
        return true;
    }

    @Override
    public MessagingApp composeApp() {
        return MessagingApp.of(MessagingApp.GOOGLE);
    }
}
