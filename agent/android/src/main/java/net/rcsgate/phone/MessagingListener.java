package net.rcsgate.phone;

import android.content.ComponentName;
import android.service.notification.NotificationListenerService;
import android.service.notification.StatusBarNotification;
import android.util.Log;

/**
 * The notification listener the person grants ("Notification access"): the messaging apps'
 * notifications go to the RCS path (RcsPhone), nothing else is read. At every (re)connect the
 * notifications showing are read again; the path's seen-set keeps that from doubling anything.
 */
public final class MessagingListener extends NotificationListenerService {
    private RcsPhone rcs() {
        return Core.get(this).rcs;
    }

    @Override
    public void onListenerConnected() {
        StatusBarNotification[] active;
        try {
            active = getActiveNotifications();
        } catch (RuntimeException e) {
            Log.w(AndroidSms.TAG, "active notifications not readable: " + e.getMessage());
            active = null;
        }
        rcs().listenerConnected(active);
    }

    @Override
    public void onListenerDisconnected() {
        rcs().listenerDisconnected();
        // Ask to be bound again (Android unbinds listeners, e.g. after the app is updated).
        try {
            requestRebind(new ComponentName(this, MessagingListener.class));
        } catch (RuntimeException e) {
            Log.w(AndroidSms.TAG, "rebind refused: " + e.getMessage());
        }
    }

    @Override
    public void onNotificationPosted(StatusBarNotification sbn) {
        rcs().posted(sbn);
    }

    @Override
    public void onNotificationRemoved(StatusBarNotification sbn) {
        rcs().removed(sbn);
    }
}
