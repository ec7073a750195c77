package net.rcsgate.phone;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import android.app.Application;
import android.app.Notification;
import android.app.PendingIntent;
import android.app.Person;
import android.app.RemoteInput;
import android.content.Intent;
import android.graphics.drawable.Icon;
import android.net.Uri;
import android.os.Bundle;
import android.os.Parcel;
import android.os.Parcelable;
import android.os.Process;
import android.service.notification.StatusBarNotification;
import java.io.File;
import java.nio.file.Files;
import java.util.List;
import java.util.Random;
import net.rcsgate.phone.it.Fixtures;
import net.rcsgate.phone.rcs.Attachments;
import net.rcsgate.phone.rcs.Contacts;
import net.rcsgate.phone.rcs.Conversation;
import net.rcsgate.phone.rcs.Incoming;
import net.rcsgate.phone.rcs.NotificationParser;
import net.rcsgate.phone.rcs.Posted;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.robolectric.RobolectricTestRunner;
import org.robolectric.RuntimeEnvironment;

/**
 * Real notifications (built with the framework's Notification.Builder from the fixtures) read by
 * NotificationReader give what the fixtures say; random and truncated Bundles never break it.
 */
@RunWith(RobolectricTestRunner.class)
public class NotificationReaderTest {
    static final long SEED = Long.getLong("rcsgate.fuzz.seed", 20261201L);

    /** The fixture as the messaging app would post it, through the platform's own builder. */
    static StatusBarNotification build(Application app, JSONObject f) throws Exception {
        JSONObject x = f.getJSONObject("extras");
        JSONObject me = x.optJSONObject("android.messagingUser");
        Notification.MessagingStyle style = new Notification.MessagingStyle(
                new Person.Builder().setName(me == null ? "Me" : me.optString("name")).build());
        if (x.has("android.conversationTitle")) style.setConversationTitle(x.getString("android.conversationTitle"));
        if (x.has("android.isGroupConversation")) style.setGroupConversation(x.getBoolean("android.isGroupConversation"));
        JSONArray ms = x.optJSONArray("android.messages");
        for (int i = 0; ms != null && i < ms.length(); i++) {
            JSONObject m = ms.getJSONObject(i);
            Notification.MessagingStyle.Message msg;
            JSONObject p = m.optJSONObject("sender_person");
            if (p != null) {
                Person.Builder pb = new Person.Builder().setName(p.optString("name"));
                if (p.has("key")) pb.setKey(p.getString("key"));
                if (p.has("uri")) pb.setUri(p.getString("uri"));
                msg = new Notification.MessagingStyle.Message(m.getString("text"), m.getLong("time"), pb.build());
            } else if (m.has("sender")) {
                msg = new Notification.MessagingStyle.Message(m.getString("text"), m.getLong("time"), m.getString("sender"));
            } else {
                msg = new Notification.MessagingStyle.Message(m.getString("text"), m.getLong("time"), (Person) null);
            }
            if (m.has("type")) msg.setData(m.getString("type"), Uri.parse(m.getString("uri")));
            style.addMessage(msg);
        }
        Notification.Builder b = new Notification.Builder(app, "messages")
                .setSmallIcon(android.R.drawable.stat_notify_chat)
                .setContentTitle(x.optString("android.title"))
                .setContentText(x.optString("android.text"))
                .setStyle(style);
        if (f.has("shortcutId")) b.setShortcutId(f.getString("shortcutId"));
        if ((f.optInt("flags") & Notification.FLAG_GROUP_SUMMARY) != 0) b.setGroup("g").setGroupSummary(true).setStyle(null);
        JSONArray acts = f.optJSONArray("actions");
        for (int i = 0; acts != null && i < acts.length(); i++) {
            JSONObject a = acts.getJSONObject(i);
            PendingIntent pi = PendingIntent.getBroadcast(app, i, new Intent("fixture." + i), PendingIntent.FLAG_MUTABLE);
            Notification.Action.Builder ab = new Notification.Action.Builder(Icon.createWithResource(app, android.R.drawable.ic_menu_send), a.getString("title"), pi)
                    .setSemanticAction(a.optInt("semantic"));
            if (a.has("remoteInput")) ab.addRemoteInput(new RemoteInput.Builder(a.getString("remoteInput")).setLabel(a.getString("title")).build());
            b.addAction(ab.build());
        }
        return new StatusBarNotification(f.getString("pkg"), f.getString("pkg"), 41, null, Process.myUid(), 0, 0, b.build(),
                Process.myUserHandle(), f.optLong("postTime"));
    }

    @Test
    public void realNotificationsReadAsTheFixturesSay() throws Exception {
        Application app = RuntimeEnvironment.getApplication();
        NotificationParser parser = new NotificationParser(Contacts.NONE);
        for (String name : Fixtures.names()) {
            JSONObject f = Fixtures.notification(name);
            Posted real = NotificationReader.read(app, build(app, f));
            Posted fixture = Fixtures.posted(f, null);
            assertEquals(name, fixture.pkg, real.pkg);
            assertEquals(name, fixture.shortcutId, real.shortcutId);
            assertEquals(name, fixture.groupSummary, real.groupSummary);
            if (fixture.groupSummary) continue;
            assertEquals(name, fixture.title, real.title);
            assertEquals(name, fixture.conversationTitle, real.conversationTitle);
            assertEquals(name, fixture.selfName, real.selfName);
            assertEquals(name, fixture.messages.size(), real.messages.size());
            for (int i = 0; i < real.messages.size(); i++) {
                Posted.Msg a = fixture.messages.get(i);
                Posted.Msg b = real.messages.get(i);
                assertEquals(name, a.text, b.text);
                assertEquals(name, a.time, b.time);
                assertEquals(name, a.senderName, b.senderName);
                assertEquals(name, a.senderUri, b.senderUri);
                assertEquals(name, a.noSender, b.noSender);
                assertEquals(name, a.mime, b.mime);
                assertEquals(name, a.dataUri, b.dataUri);
            }
            assertEquals(name, fixture.actions.size(), real.actions.size());
            for (int i = 0; i < real.actions.size(); i++) {
                assertEquals(name, fixture.actions.get(i).title, real.actions.get(i).title);
                assertEquals(name, fixture.actions.get(i).semantic, real.actions.get(i).semantic);
                assertEquals(name, fixture.actions.get(i).freeFormInput, real.actions.get(i).freeFormInput);
                assertNotNull(real.actions.get(i).handle);
            }
            // And both parse to the same conversation.
            Conversation cr = parser.parse(real);
            Conversation cf = parser.parse(fixture);
            assertEquals(name, cf.chat, cr.chat);
            assertEquals(name, cf.messages.get(cf.messages.size() - 1).id, cr.messages.get(cr.messages.size() - 1).id);
        }
    }

    @Test
    public void aLegacyBundleWithoutPerson() throws Exception {
        Bundle m = new Bundle();
        m.putCharSequence("text", "from an old app");
        m.putLong("time", 5);
        m.putCharSequence("sender", "Dave");
        Posted.Msg read = NotificationReader.message(m);
        assertEquals("Dave", read.senderName);
        assertTrue(!read.noSender);
        Bundle mine = new Bundle();
        mine.putCharSequence("text", "mine");
        assertTrue("no sender at all: the owner's", NotificationReader.message(mine).noSender);
    }

    @Test
    public void theReplyActionFillsTheRemoteInput() throws Exception {
        Application app = RuntimeEnvironment.getApplication();
        Posted p = NotificationReader.read(app, build(app, Fixtures.notification("google-1to1")));
        Posted.Act reply = p.actions.get(0);
        reply.handle.fire("on my way");
        Intent sent = org.robolectric.Shadows.shadowOf(app).getBroadcastIntents().get(0);
        Bundle results = RemoteInput.getResultsFromIntent(sent);
        assertNotNull("the messaging app gets the RemoteInput's results", results);
        assertEquals("on my way", results.getCharSequence("reply_text").toString());
        assertEquals(RemoteInput.SOURCE_FREE_FORM_INPUT, RemoteInput.getResultsSource(sent));
    }

    static Object junk(Random r, int depth) {
        switch (r.nextInt(12)) {
            case 0: return null;
            case 1: return r.nextInt();
            case 2: return "s" + r.nextLong();
            case 3: return new int[] {1, 2};
            case 4: return new Bundle();
            case 5: {
                Bundle b = new Bundle();
                if (depth < 2) {
                    put(b, "text", junk(r, depth + 1));
                    put(b, "time", junk(r, depth + 1));
                    put(b, "sender", junk(r, depth + 1));
                    put(b, "sender_person", junk(r, depth + 1));
                    put(b, "type", junk(r, depth + 1));
                    put(b, "uri", junk(r, depth + 1));
                }
                return b;
            }
            case 6: {
                Parcelable[] a = new Parcelable[r.nextInt(5)];
                for (int i = 0; i < a.length; i++) {
                    Object o = depth < 2 ? junk(r, depth + 1) : null;
                    a[i] = o instanceof Parcelable ? (Parcelable) o : null;
                }
                return a;
            }
            case 7: return new Person.Builder().setName(r.nextBoolean() ? null : "P" + r.nextInt()).setUri(r.nextBoolean() ? "tel:" + r.nextInt() : null).build();
            case 8: return Uri.parse("content://x/" + r.nextInt());
            case 9: return r.nextLong();
            case 10: return r.nextBoolean();
            default: return new String[] {"a", null};
        }
    }

    static void put(Bundle b, String k, Object v) {
        if (v == null) b.putString(k, null);
        else if (v instanceof Integer) b.putInt(k, (Integer) v);
        else if (v instanceof Long) b.putLong(k, (Long) v);
        else if (v instanceof Boolean) b.putBoolean(k, (Boolean) v);
        else if (v instanceof String) b.putString(k, (String) v);
        else if (v instanceof int[]) b.putIntArray(k, (int[]) v);
        else if (v instanceof String[]) b.putStringArray(k, (String[]) v);
        else if (v instanceof Parcelable[]) b.putParcelableArray(k, (Parcelable[]) v);
        else if (v instanceof Parcelable) b.putParcelable(k, (Parcelable) v);
    }

    static final String[] KEYS = {
        Notification.EXTRA_TITLE, Notification.EXTRA_TEXT, Notification.EXTRA_CONVERSATION_TITLE, Notification.EXTRA_IS_GROUP_CONVERSATION,
        Notification.EXTRA_MESSAGING_PERSON, Notification.EXTRA_SELF_DISPLAY_NAME, Notification.EXTRA_MESSAGES, Notification.EXTRA_HISTORIC_MESSAGES,
    };

    @Test
    public void randomAndTruncatedBundlesNeverBreakTheReader() throws Exception {
        Application app = RuntimeEnvironment.getApplication();
        File dir = Files.createTempDirectory("reader-fuzz").toFile();
        final int[] stored = {0};
        Incoming in = new Incoming(dir, ev -> stored[0]++, Contacts.NONE, Attachments.NONE, () -> false, (d, r) -> { }, System::currentTimeMillis);
        Random r = new Random(SEED);
        int read = 0;
        for (int round = 0; round < 400; round++) {
            Notification n = build(app, Fixtures.notification(Fixtures.names().get(round % Fixtures.names().size()))).getNotification();
            for (String k : KEYS) if (r.nextInt(3) == 0) put(n.extras, k, junk(r, 0));
            if (r.nextInt(4) == 0) {
                // The extras through a parcel, cut short: a Bundle that may fail when read.
                Parcel out = Parcel.obtain();
                n.extras.writeToParcel(out, 0);
                byte[] bytes = out.marshall();
                out.recycle();
                Parcel back = Parcel.obtain();
                int len = r.nextInt(bytes.length + 1);
                try {
                    back.unmarshall(bytes, 0, len);
                    back.setDataPosition(0);
                    Bundle b = Bundle.CREATOR.createFromParcel(back);
                    n.extras.clear();
                    n.extras.putAll(b);
                } catch (RuntimeException | Error e) {
                    // The platform itself refused the parcel (Robolectric's Parcel says so with an
                    // Error): such a notification never reaches a listener.
                    n.extras.clear();
                } finally {
                    back.recycle();
                }
            }
            StatusBarNotification sbn = new StatusBarNotification(round % 2 == 0 ? "com.google.android.apps.messaging" : "com.samsung.android.messaging",
                    "x", round, null, Process.myUid(), 0, 0, n, Process.myUserHandle(), 1767225600000L + round);
            Posted p;
            try {
                p = NotificationReader.read(app, sbn);
                in.posted(p);
            } catch (RuntimeException e) {
                throw new AssertionError("round " + round + " (seed " + SEED + "): " + e, e);
            }
            read++;
        }
        assertEquals(400, read);
        assertTrue("some rounds still gave messages", stored[0] > 0);
        assertNull(NotificationReader.read(app, null).shortcutId);
    }
}
