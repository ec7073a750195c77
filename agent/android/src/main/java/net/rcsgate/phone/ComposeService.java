package net.rcsgate.phone;

import android.accessibilityservice.AccessibilityService;
import android.app.KeyguardManager;
import android.content.Intent;
import android.net.Uri;
import android.os.PowerManager;
import android.view.accessibility.AccessibilityEvent;
import android.view.accessibility.AccessibilityNodeInfo;
import net.rcsgate.phone.rcs.ComposeDriver;
import net.rcsgate.phone.rcs.MessagingApp;
import net.rcsgate.phone.rcs.UiNode;

/**
 * The accessibility service the person turns on so Matrix can start chats in the messaging app:
 * it passes the messaging apps' window events to the compose driver and lets it read their
 * windows and press Send. Its configuration (res/xml/compose_service.xml) limits it to those
 * apps' events. Being bound by the system is also what lets the app open the compose screen from
 * the background (Android's exemption for accessibility services).
 */
public final class ComposeService extends AccessibilityService {
    private RcsPhone rcs;

    @Override
    protected void onServiceConnected() {
        super.onServiceConnected();
        rcs = Core.get(this).rcs;
        rcs.serviceConnected(this);
    }

    @Override
    public void onAccessibilityEvent(AccessibilityEvent e) {
        if (rcs == null || e == null || e.getPackageName() == null) return;
        if (MessagingApp.of(e.getPackageName().toString()) == null) return;
        if (rcs.compose.busy()) rcs.tick();
    }

    @Override
    public void onInterrupt() {
        // nothing spoken or vibrated to stop
    }

    @Override
    public boolean onUnbind(Intent intent) {
        if (rcs != null) rcs.serviceGone(this);
        return super.onUnbind(intent);
    }

    @Override
    public void onDestroy() {
        if (rcs != null) rcs.serviceGone(this);
        super.onDestroy();
    }

    /** The phone as the compose driver sees it, through whichever service instance is bound. */
    static final class Screen implements ComposeDriver.Screen {
        private final RcsPhone rcs;

        Screen(RcsPhone rcs) {
            this.rcs = rcs;
        }

        @Override
        public boolean connected() {
            return rcs.service() != null;
        }

        @Override
        public boolean locked() {
            KeyguardManager km = rcs.app.getSystemService(KeyguardManager.class);
            PowerManager pm = rcs.app.getSystemService(PowerManager.class);
            return (km != null && km.isKeyguardLocked()) || (pm != null && !pm.isInteractive());
        }

        @Override
        public boolean installed(String pkg) {
            return rcs.installed(pkg);
        }

        @Override
        public void open(String pkg, String number, String text) {
            ComposeService s = rcs.service();
            if (s == null) throw new IllegalStateException("service gone");
            Intent i = new Intent(Intent.ACTION_SENDTO, Uri.parse("smsto:" + Uri.encode(number)))
                    .putExtra("sms_body", text)
                    .setPackage(pkg)
                    .addFlags(Intent.FLAG_ACTIVITY_NEW_TASK);
            s.startActivity(i);
        }

        @Override
        public UiNode root() {
            ComposeService s = rcs.service();
            if (s == null) return null;
            AccessibilityNodeInfo n = s.getRootInActiveWindow();
            return n == null ? null : new Node(n);
        }

        @Override
        public void leave() {
            ComposeService s = rcs.service();
            if (s != null) s.performGlobalAction(GLOBAL_ACTION_BACK);
        }
    }

    /** AccessibilityNodeInfo as a UiNode. */
    static final class Node implements UiNode {
        private final AccessibilityNodeInfo n;

        Node(AccessibilityNodeInfo n) {
            this.n = n;
        }

        private static String s(CharSequence c) {
            return c == null ? null : c.toString();
        }

        @Override
        public String pkg() {
            return s(n.getPackageName());
        }

        @Override
        public String viewId() {
            return n.getViewIdResourceName();
        }

        @Override
        public String className() {
            return s(n.getClassName());
        }

        @Override
        public String text() {
            return s(n.getText());
        }

        @Override
        public String description() {
            return s(n.getContentDescription());
        }

        @Override
        public boolean clickable() {
            return n.isClickable();
        }

        @Override
        public boolean enabled() {
            return n.isEnabled();
        }

        @Override
        public boolean editable() {
            return n.isEditable();
        }

        @Override
        public int childCount() {
            return n.getChildCount();
        }

        @Override
        public UiNode child(int i) {
            AccessibilityNodeInfo c = n.getChild(i);
            return c == null ? null : new Node(c);
        }

        @Override
        public boolean click() {
            return n.performAction(AccessibilityNodeInfo.ACTION_CLICK);
        }
    }
}
