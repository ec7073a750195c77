package net.rcsgate.phone;

import android.content.ComponentName;
import android.content.Context;
import android.content.SharedPreferences;
import android.content.pm.PackageManager;
import android.provider.Settings;
import android.provider.Telephony;
import android.service.notification.StatusBarNotification;
import java.io.File;
import java.io.IOException;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.Inbox;
import net.rcsgate.phone.rcs.ComposeDriver;
import net.rcsgate.phone.rcs.Conversation;
import net.rcsgate.phone.rcs.Incoming;
import net.rcsgate.phone.rcs.MessagingApp;
import net.rcsgate.phone.rcs.Posted;
import net.rcsgate.phone.rcs.RcsPath;
import net.rcsgate.phone.rcs.Replies;
import net.rcsgate.phone.sms.SendLog;

/**
 * The RCS path's objects in one place (one per process, in Core) and its wiring to the platform:
 * the listener and the accessibility service hand their callbacks here, and everything runs on
 * one thread of its own (notification reading copies files; the compose driver waits for
 * windows), never on the main thread.
 */
final class RcsPhone implements RcsPath.Platform, Incoming.SmsSide, Inbox.Listener {
    static final String PREF_MARK_READ = "rcs_mark_read";

    final Context app;
    final ScheduledExecutorService thread = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r, "rcsgate-rcs");
        t.setDaemon(true);
        return t;
    });
    final Replies replies = new Replies();
    final Incoming incoming;
    final ComposeDriver compose;
    final RcsPath path;
    final AndroidContacts contacts;
    private final Inbox inbox;
    private final Runnable capsChanged;
    private volatile boolean listening;
    private volatile ComposeService service;

    RcsPhone(Context app, File files, Inbox inbox, Runnable capsChanged) throws IOException {
        this.app = app;
        this.inbox = inbox;
        this.capsChanged = capsChanged;
        contacts = new AndroidContacts(app);
        incoming = new Incoming(files, inbox, contacts, new AndroidAttachments(app), this,
                (delay, r) -> thread.schedule(r, delay, TimeUnit.MILLISECONDS), System::currentTimeMillis);
        compose = new ComposeDriver(new ComposeService.Screen(this), System::currentTimeMillis,
                (ms, r) -> thread.schedule(r, ms, TimeUnit.MILLISECONDS));
        path = new RcsPath(this, replies, incoming, compose, new SendLog(new File(files, "rcs-sends.log")), System::currentTimeMillis);
        inbox.addListener(this);
        thread.execute(this::cleanMedia);
    }

    // From MessagingListener (main thread).

    void listenerConnected(StatusBarNotification[] active) {
        boolean was = listening;
        listening = true;
        if (active != null) for (StatusBarNotification sbn : active) posted(sbn);
        if (!was) capsChanged.run();
    }

    void listenerDisconnected() {
        listening = false;
        replies.clear();
        capsChanged.run();
    }

    void posted(StatusBarNotification sbn) {
        if (sbn == null || MessagingApp.of(sbn.getPackageName()) == null) return;
        final Posted p = NotificationReader.read(app, sbn);
        thread.execute(() -> {
            int waiting = inbox.size();
            Conversation c = incoming.posted(p);
            if (c != null) replies.posted(p, c);
            if (inbox.size() > waiting) AgentService.start(app); // the agent must run to take it (after a restart, the listener may be first)
            cleanMedia();
        });
    }

    void removed(StatusBarNotification sbn) {
        if (sbn == null) return;
        final String key = sbn.getKey();
        thread.execute(() -> replies.removed(key));
    }

    // From ComposeService.

    void serviceConnected(ComposeService s) {
        service = s;
        capsChanged.run();
    }

    void serviceGone(ComposeService s) {
        if (service == s) {
            service = null;
            capsChanged.run();
        }
        tick();
    }

    ComposeService service() {
        return service;
    }

    /** An accessibility event of a messaging app while a compose job runs: look at the window. */
    void tick() {
        thread.execute(compose::tick);
    }

    // RcsPath.Platform

    @Override
    public boolean listening() {
        return listening;
    }

    @Override
    public boolean composing() {
        return service != null;
    }

    @Override
    public boolean markRead() {
        return prefs().getBoolean(PREF_MARK_READ, true);
    }

    void setMarkRead(boolean on) {
        prefs().edit().putBoolean(PREF_MARK_READ, on).apply();
    }

    private SharedPreferences prefs() {
        return app.getSharedPreferences(AgentService.PREFS, Context.MODE_PRIVATE);
    }

    @Override
    public MessagingApp composeApp() {
        MessagingApp def = MessagingApp.of(defaultSmsApp());
        if (def != null) return def;
        for (MessagingApp a : MessagingApp.ALL) if (installed(a.pkg)) return a;
        return null;
    }

    String defaultSmsApp() {
        try {
            return Telephony.Sms.getDefaultSmsPackage(app);
        } catch (RuntimeException e) {
            return null;
        }
    }

    boolean installed(String pkg) {
        try {
            app.getPackageManager().getPackageInfo(pkg, 0);
            return true;
        } catch (PackageManager.NameNotFoundException | RuntimeException e) {
            return false;
        }
    }

    /** Notification access is granted (the listener may not be connected yet). */
    boolean notificationAccessGranted() {
        ComponentName cn = new ComponentName(app, MessagingListener.class);
        try {
            if (android.os.Build.VERSION.SDK_INT >= 27) {
                return app.getSystemService(android.app.NotificationManager.class).isNotificationListenerAccessGranted(cn);
            }
            // Android 8.0: the setting the system keeps the granted listeners in.
            return enabledIn(Settings.Secure.getString(app.getContentResolver(), "enabled_notification_listeners"), cn);
        } catch (RuntimeException e) {
            return listening;
        }
    }

    boolean accessibilityGranted() {
        try {
            return enabledIn(Settings.Secure.getString(app.getContentResolver(), Settings.Secure.ENABLED_ACCESSIBILITY_SERVICES),
                    new ComponentName(app, ComposeService.class));
        } catch (RuntimeException e) {
            return service != null;
        }
    }

    static boolean enabledIn(String setting, ComponentName cn) {
        if (setting == null) return false;
        for (String s : setting.split(":")) {
            ComponentName c = ComponentName.unflattenFromString(s.trim());
            if (cn.equals(c)) return true;
        }
        return false;
    }

    // Incoming.SmsSide

    @Override
    public boolean active() {
        return app.checkSelfPermission(android.Manifest.permission.RECEIVE_SMS) == PackageManager.PERMISSION_GRANTED;
    }

    // Inbox.Listener: the SMS path's texts, remembered so their notification copies are left out.

    @Override
    public void onPut(Event ev) {
        if ("sms".equals(ev.transport())) {
            final long at = System.currentTimeMillis();
            thread.execute(() -> incoming.smsStored(ev, at));
        }
    }

    /** Whether an SMS just received was already bridged from the messaging app's notification. */
    boolean smsAlreadyBridged(String from, String text) {
        return incoming.smsAlreadyBridged(from, text, System.currentTimeMillis());
    }

    /** Deletes copied notification files the agent has taken. */
    private void cleanMedia() {
        Set<String> needed = new HashSet<>();
        for (Event ev : inbox.waiting()) {
            String f = ev.json.optString("file", "");
            if (!f.isEmpty()) needed.add(f);
        }
        incoming.cleanMedia(needed);
    }
}
