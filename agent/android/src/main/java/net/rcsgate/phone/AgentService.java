package net.rcsgate.phone;

import android.app.Notification;
import android.app.NotificationChannel;
import android.app.NotificationManager;
import android.app.PendingIntent;
import android.app.Service;
import android.content.Context;
import android.content.Intent;
import android.content.SharedPreferences;
import android.content.pm.ServiceInfo;
import android.net.ConnectivityManager;
import android.net.LinkProperties;
import android.net.Network;
import android.os.Build;
import android.os.IBinder;
import android.util.Log;
import java.net.InetAddress;
import java.text.DateFormat;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import net.rcsgate.phone.core.AgentRunner;
import net.rcsgate.phone.core.AgentStatus;
import net.rcsgate.phone.core.Event;

/**
 * The foreground service (type specialUse) that keeps the agent running: it starts the runner,
 * tells the agent about network changes and DNS servers, shows the status in its notification,
 * and backfills recent SMS history once after pairing. Restarted by the system (START_STICKY),
 * at boot and after an update (BootReceiver).
 */
public final class AgentService extends Service implements Core.Listener {
    static final String CHANNEL = "status";
    static final int NOTIFICATION = 1;
    static final String PREFS = "rcsgate";
    static final String PREF_BACKFILLED = "backfilled";
    static final long BACKFILL_DAYS = 30;
    static final int BACKFILL_MAX = 1000;

    private Core core;
    private ConnectivityManager.NetworkCallback netCallback;
    private List<String> lastDns;
    private String lastText = "";

    /** Starts the service if the phone is paired; a refusal (app in background) is logged. */
    static void start(Context context) {
        Core core = Core.get(context);
        if (!core.paired()) return;
        try {
            context.startForegroundService(new Intent(context, AgentService.class));
        } catch (RuntimeException e) {
            // Android 12+ refuses starts from the background in some states; the message is safe in
            // the Inbox and goes out when the service runs (at the next start, boot or app open).
            Log.w(AndroidSms.TAG, "service not started: " + e.getMessage());
            core.log.line("app: service not started now: " + e.getMessage());
        }
    }

    static void stop(Context context) {
        context.stopService(new Intent(context, AgentService.class));
    }

    @Override
    public void onCreate() {
        super.onCreate();
        core = Core.get(this);
        NotificationManager nm = getSystemService(NotificationManager.class);
        NotificationChannel ch = new NotificationChannel(CHANNEL, getString(R.string.channel_status), NotificationManager.IMPORTANCE_LOW);
        ch.setDescription(getString(R.string.channel_status_about));
        nm.createNotificationChannel(ch);
        Notification n = notification(getString(R.string.starting));
        if (Build.VERSION.SDK_INT >= 34) {
            startForeground(NOTIFICATION, n, ServiceInfo.FOREGROUND_SERVICE_TYPE_SPECIAL_USE);
        } else {
            startForeground(NOTIFICATION, n);
        }
        core.addListener(this);
        watchNetwork();
    }

    @Override
    public int onStartCommand(Intent intent, int flags, int startId) {
        if (!core.paired()) {
            stopSelf();
            return START_NOT_STICKY;
        }
        synchronized (core) {
            if (core.runner == null) {
                core.runner = new AgentRunner(new AgentRunner.Command(core.agentPath(), core.agentState, "info"),
                        "rcsgate-phone/" + BuildInfo.VERSION, core.router, core.inbox, new RunnerCallbacks(core), core.log, core.timer);
            }
            if (lastDns != null) core.runner.network(lastDns);
            core.runner.start();
        }
        return START_STICKY;
    }

    @Override
    public void onDestroy() {
        core.removeListener(this);
        if (netCallback != null) {
            getSystemService(ConnectivityManager.class).unregisterNetworkCallback(netCallback);
        }
        final AgentRunner r;
        synchronized (core) {
            r = core.runner;
        }
        if (r != null) {
            core.timer.execute(() -> {
                try {
                    r.stop();
                } catch (InterruptedException ignored) {
                    Thread.currentThread().interrupt();
                }
            });
        }
        super.onDestroy();
    }

    @Override
    public IBinder onBind(Intent intent) {
        return null;
    }

    private void watchNetwork() {
        ConnectivityManager cm = getSystemService(ConnectivityManager.class);
        netCallback = new ConnectivityManager.NetworkCallback() {
            @Override
            public void onLinkPropertiesChanged(Network network, LinkProperties lp) {
                List<String> dns = new ArrayList<>();
                for (InetAddress a : lp.getDnsServers()) {
                    if (dns.size() < 8) dns.add(a.getHostAddress());
                }
                networkChanged(dns);
            }

            @Override
            public void onAvailable(Network network) {
                networkChanged(null);
            }
        };
        cm.registerDefaultNetworkCallback(netCallback);
    }

    private void networkChanged(List<String> dns) {
        synchronized (core) {
            if (dns != null && dns.equals(lastDns)) return; // properties changed, not the servers
            if (dns != null) lastDns = dns;
            if (core.runner != null) core.runner.network(dns != null ? dns : lastDns);
        }
    }

    /** The status in the notification, whenever its text changes. */
    @Override
    public void onChanged() {
        String text = notificationText(core);
        if (text.equals(lastText)) return;
        lastText = text;
        getSystemService(NotificationManager.class).notify(NOTIFICATION, notification(text));
        maybeBackfill();
    }

    static String notificationText(Core core) {
        if (!core.lastRefused().isEmpty()) return core.lastRefused();
        AgentStatus s = core.status();
        if (core.state() == AgentRunner.State.NOT_PAIRED || s.unpaired) return "Not paired: open the app to pair this phone again.";
        return s.describe(DateFormat.getTimeInstance(DateFormat.SHORT));
    }

    private Notification notification(String text) {
        Intent open = new Intent(this, SetupActivity.class);
        PendingIntent pi = PendingIntent.getActivity(this, 0, open, PendingIntent.FLAG_IMMUTABLE);
        return new Notification.Builder(this, CHANNEL)
                .setSmallIcon(android.R.drawable.stat_notify_chat)
                .setContentTitle(getString(R.string.app_name))
                .setContentText(text)
                .setStyle(new Notification.BigTextStyle().bigText(text))
                .setContentIntent(pi)
                .setOngoing(true)
                .build();
    }

    /** Once after pairing, when connected: the last 30 days of SMS go to the server as history. */
    private void maybeBackfill() {
        if (!core.status().connected) return;
        SharedPreferences p = getSharedPreferences(PREFS, MODE_PRIVATE);
        if (p.getBoolean(PREF_BACKFILLED, false)) return;
        p.edit().putBoolean(PREF_BACKFILLED, true).apply();
        final long since = System.currentTimeMillis() - TimeUnit.DAYS.toMillis(BACKFILL_DAYS);
        core.timer.execute(() -> {
            int n = 0;
            for (Event ev : core.sms.history(since, BACKFILL_MAX)) {
                try {
                    core.inbox.put(ev);
                    n++;
                } catch (java.io.IOException e) {
                    core.log.line("app: backfill stopped: " + e.getMessage());
                    break;
                }
            }
            core.log.line("app: backfill offered " + n + " messages");
        });
    }

    /** Forgets that backfill ran (unpair). */
    static void resetBackfill(Context c) {
        c.getSharedPreferences(PREFS, MODE_PRIVATE).edit().remove(PREF_BACKFILLED).apply();
    }

    static final class RunnerCallbacks implements AgentRunner.Callbacks {
        private final Core core;

        RunnerCallbacks(Core core) {
            this.core = core;
        }

        @Override
        public void onState(AgentRunner.State state, String detail) {
            core.setState(state, detail);
        }

        @Override
        public void onStatus(AgentStatus status) {
            core.setStatus(status);
        }

        @Override
        public void onRefused(String id, String reason) {
            core.setRefused("A message could not be passed to the server: " + reason);
        }
    }
}
