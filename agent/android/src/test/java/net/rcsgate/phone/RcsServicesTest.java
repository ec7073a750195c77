package net.rcsgate.phone;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertTrue;

import android.app.Application;
import android.content.Intent;
import android.provider.Settings;
import android.view.View;
import android.widget.TextView;
import android.service.notification.StatusBarNotification;
import android.view.accessibility.AccessibilityNodeInfo;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.it.Fixtures;
import net.rcsgate.phone.rcs.MessagingApp;
import org.json.JSONObject;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.robolectric.Robolectric;
import org.robolectric.RobolectricTestRunner;
import org.robolectric.RuntimeEnvironment;
import org.robolectric.Shadows;
import org.robolectric.shadows.ShadowAccessibilityNodeInfo;

/** The framework services of the RCS path on Robolectric: listener → Inbox, accessibility nodes. */
@RunWith(RobolectricTestRunner.class)
public class RcsServicesTest {
    Application app;

    @Before
    public void setUp() {
        Core.resetForTests();
        app = RuntimeEnvironment.getApplication();
    }

    @After
    public void tearDown() {
        Core.resetForTests();
    }

    /** Waits until the RCS thread has done what was queued before now (no sleeping). */
    static void drain(Core core) throws Exception {
        core.rcs.thread.submit(() -> { }).get(10, TimeUnit.SECONDS);
    }

    @Test
    public void postedNotificationsReachTheInboxOnce() throws Exception {
        MessagingListener listener = Robolectric.buildService(MessagingListener.class).create().get();
        Core core = Core.get(app);
        StatusBarNotification sbn = NotificationReaderTest.build(app, Fixtures.notification("google-group"));
        listener.onNotificationPosted(sbn);
        listener.onNotificationPosted(sbn); // posted again
        drain(core);
        List<String> texts = new ArrayList<>();
        for (Event e : core.inbox.waiting()) if (e.kind().equals("text")) texts.add(e.text());
        assertEquals(3, texts.size());
        assertEquals("Dinner on Sunday?", texts.get(0));
        assertNotNull("the reply action is cached for the chat", core.rcs.replies.get(core.inbox.waiting().get(0).chat()));
        // Gone from the shade: the cached actions go too.
        listener.onNotificationRemoved(sbn);
        drain(core);
        assertEquals(0, core.rcs.replies.size());
        // Other apps' notifications are not read at all.
        JSONObject other = Fixtures.notification("google-1to1").put("pkg", "com.whatsapp");
        int before = core.inbox.size();
        listener.onNotificationPosted(NotificationReaderTest.build(app, other));
        drain(core);
        assertEquals(before, core.inbox.size());
    }

    @Test
    public void listenerConnectionChangesTheCaps() throws Exception {
        MessagingListener listener = Robolectric.buildService(MessagingListener.class).create().get();
        Core core = Core.get(app);
        assertTrue("nothing granted: the RCS path offers nothing", core.rcs.path.caps().isEmpty());
        core.rcs.listenerConnected(null);
        assertTrue(core.rcs.path.caps().containsKey("rcs"));
        listener.onListenerDisconnected();
        assertFalse(core.rcs.path.caps().containsKey("rcs"));
    }

    @Test
    public void accessibilityNodesAsTheDriverSeesThem() {
        AccessibilityNodeInfo root = AccessibilityNodeInfo.obtain();
        root.setPackageName(MessagingApp.SAMSUNG);
        AccessibilityNodeInfo field = AccessibilityNodeInfo.obtain();
        field.setPackageName(MessagingApp.SAMSUNG);
        field.setViewIdResourceName(MessagingApp.SAMSUNG + ":id/message_edit_text");
        field.setEditable(true);
        field.setText("hello");
        AccessibilityNodeInfo send = AccessibilityNodeInfo.obtain();
        send.setPackageName(MessagingApp.SAMSUNG);
        send.setViewIdResourceName(MessagingApp.SAMSUNG + ":id/send_button");
        send.setContentDescription("Send");
        send.setClickable(true);
        send.setEnabled(true);
        ShadowAccessibilityNodeInfo shadow = Shadows.shadowOf(root);
        shadow.addChild(field);
        shadow.addChild(send);
        ComposeService.Node n = new ComposeService.Node(root);
        assertEquals(MessagingApp.SAMSUNG, n.pkg());
        assertEquals(2, n.childCount());
        assertEquals("hello", n.child(0).text());
        assertTrue(n.child(0).editable());
        assertEquals("Send", n.child(1).description());
        assertTrue(n.child(1).click());
        assertTrue(Shadows.shadowOf(send).getPerformedActions().contains(AccessibilityNodeInfo.ACTION_CLICK));
    }

    @Test
    public void theComposeServiceTurnsComposingOn() {
        Core core = Core.get(app);
        assertFalse(core.rcs.composing());
        ComposeService s = Robolectric.buildService(ComposeService.class).create().get();
        s.onServiceConnected();
        assertTrue(core.rcs.composing());
        assertSame(s, core.rcs.service());
        s.onUnbind(null);
        assertFalse(core.rcs.composing());
    }

    @Test
    public void theSetupScreenShowsTheRcsStepsAndOpensTheirSettings() {
        SetupActivity a = Robolectric.buildActivity(SetupActivity.class).setup().get();
        String na = SetupActivityTest.step(a, "NOTIFICATION_ACCESS");
        assertTrue(na, na.startsWith("•  Read the messaging app's notifications"));
        assertTrue("Android 14 here: the restricted-settings step shows", SetupActivityTest.step(a, "RESTRICTED_SETTINGS").contains("⋮"));
        a.getWindow().getDecorView().findViewWithTag("NOTIFICATION_ACCESS").performClick();
        Intent opened = Shadows.shadowOf(a).getNextStartedActivity();
        assertEquals(Settings.ACTION_NOTIFICATION_LISTENER_SETTINGS, opened.getAction());
        a.getWindow().getDecorView().findViewWithTag("ACCESSIBILITY").performClick();
        assertEquals(Settings.ACTION_ACCESSIBILITY_SETTINGS, Shadows.shadowOf(a).getNextStartedActivity().getAction());
        a.getWindow().getDecorView().findViewWithTag("RESTRICTED_SETTINGS").performClick();
        assertEquals(Settings.ACTION_APPLICATION_DETAILS_SETTINGS, Shadows.shadowOf(a).getNextStartedActivity().getAction());
        // Notification access granted: the step is ticked.
        Shadows.shadowOf(app.getSystemService(android.app.NotificationManager.class))
                .setNotificationListenerAccessGranted(new android.content.ComponentName(app, MessagingListener.class), true);
        a.refresh();
        assertTrue(SetupActivityTest.step(a, "NOTIFICATION_ACCESS").startsWith("✓"));
        // The mark-read setting is a checkbox the RCS path reads.
        Core core = Core.get(app);
        assertTrue(core.rcs.markRead());
        View box = null;
        for (View v : a.getWindow().getDecorView().getTouchables()) {
            if (v instanceof android.widget.CheckBox) box = v;
        }
        assertNotNull(box);
        box.performClick();
        assertFalse(core.rcs.markRead());
        assertEquals(a.getString(R.string.mark_read), ((TextView) box).getText().toString());
    }
}
