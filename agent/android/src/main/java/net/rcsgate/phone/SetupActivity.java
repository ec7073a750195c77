package net.rcsgate.phone;

import android.Manifest;
import android.app.Activity;
import android.app.AlertDialog;
import android.app.NotificationManager;
import android.content.Intent;
import android.content.pm.PackageManager;
import android.graphics.Typeface;
import android.net.Uri;
import android.os.Build;
import android.os.Bundle;
import android.os.PowerManager;
import android.provider.Settings;
import android.view.View;
import android.widget.Button;
import android.widget.CheckBox;
import android.widget.EditText;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.TextView;
import java.io.File;
import java.text.DateFormat;
import java.util.ArrayList;
import java.util.List;
import net.rcsgate.phone.core.AgentRunner;
import net.rcsgate.phone.core.AgentStatus;
import net.rcsgate.phone.core.PairLink;
import net.rcsgate.phone.core.Pairing;
import net.rcsgate.phone.core.SetupChecks;
import net.rcsgate.phone.rcs.RcsSetup;

/**
 * The one screen: each setup step with a live check (tap a step to fix it), the pairing field
 * (also filled by rcsgate://pair links: a QR code scanned with the camera opens this screen), the
 * agent's status, and unpairing.
 */
public final class SetupActivity extends Activity implements Core.Listener, SetupChecks.Phone {
    static final int REQ_SMS = 1;
    static final int REQ_NOTIFY = 2;
    static final int REQ_CONTACTS = 3;
    static final String[] SMS_PERMISSIONS = {
        Manifest.permission.SEND_SMS, Manifest.permission.RECEIVE_SMS, Manifest.permission.READ_SMS, Manifest.permission.READ_PHONE_STATE,
    };

    private Core core;
    private LinearLayout steps;
    private EditText linkField;
    private TextView pairMessage;
    private Button pairButton;
    private Button unpairButton;
    private TextView statusText;
    private CheckBox markRead;
    private volatile boolean pairing;

    @Override
    protected void onCreate(Bundle saved) {
        super.onCreate(saved);
        core = Core.get(this);
        setContentView(layout());
        handleLink(getIntent());
    }

    @Override
    protected void onNewIntent(Intent intent) {
        super.onNewIntent(intent);
        setIntent(intent);
        handleLink(intent);
    }

    @Override
    protected void onResume() {
        super.onResume();
        core.addListener(this);
        refresh();
        if (core.paired() && core.state() == AgentRunner.State.STOPPED) AgentService.start(this);
    }

    @Override
    protected void onPause() {
        core.removeListener(this);
        super.onPause();
    }

    @Override
    public void onChanged() {
        runOnUiThread(this::refresh);
    }

    private View layout() {
        int pad = dp(16);
        LinearLayout root = new LinearLayout(this);
        root.setOrientation(LinearLayout.VERTICAL);
        root.setPadding(pad, pad, pad, pad);
        TextView title = new TextView(this);
        title.setText(R.string.app_name);
        title.setTextSize(24);
        title.setTypeface(Typeface.DEFAULT_BOLD);
        root.addView(title);
        TextView intro = new TextView(this);
        intro.setText(R.string.intro);
        intro.setPadding(0, dp(8), 0, dp(8));
        root.addView(intro);

        steps = new LinearLayout(this);
        steps.setOrientation(LinearLayout.VERTICAL);
        root.addView(steps);

        markRead = new CheckBox(this);
        markRead.setText(R.string.mark_read);
        markRead.setChecked(core.rcs.markRead());
        markRead.setOnCheckedChangeListener((v, on) -> core.rcs.setMarkRead(on));
        root.addView(markRead);

        TextView pairTitle = new TextView(this);
        pairTitle.setText(R.string.pair_title);
        pairTitle.setTypeface(Typeface.DEFAULT_BOLD);
        pairTitle.setPadding(0, dp(16), 0, dp(4));
        root.addView(pairTitle);
        linkField = new EditText(this);
        linkField.setHint("rcsgate://pair?addr=…");
        linkField.setSingleLine(false);
        linkField.setId(R.id.link);
        root.addView(linkField);
        pairButton = new Button(this);
        pairButton.setText(R.string.pair);
        pairButton.setId(R.id.pair);
        pairButton.setOnClickListener(v -> confirmPair(linkField.getText().toString()));
        root.addView(pairButton);
        pairMessage = new TextView(this);
        pairMessage.setId(R.id.pair_message);
        root.addView(pairMessage);

        statusText = new TextView(this);
        statusText.setPadding(0, dp(16), 0, dp(8));
        statusText.setId(R.id.status);
        root.addView(statusText);

        unpairButton = new Button(this);
        unpairButton.setText(R.string.unpair);
        unpairButton.setId(R.id.unpair);
        unpairButton.setOnClickListener(v -> confirmUnpair());
        root.addView(unpairButton);

        ScrollView sv = new ScrollView(this);
        sv.addView(root);
        return sv;
    }

    private int dp(int v) {
        return (int) (v * getResources().getDisplayMetrics().density + 0.5f);
    }

    /** Redraws the steps and the status from the live checks. */
    void refresh() {
        steps.removeAllViews();
        List<SetupChecks.Check> checks = RcsSetup.merge(SetupChecks.run(this, DateFormat.getTimeInstance(DateFormat.SHORT)), RcsSetup.run(rcsPhone));
        for (final SetupChecks.Check c : checks) {
            TextView t = new TextView(this);
            t.setText((c.ok ? "✓  " : "•  ") + c.title + (c.detail.isEmpty() ? "" : "\n     " + c.detail));
            t.setPadding(0, dp(6), 0, dp(6));
            t.setTag(c.step.name());
            if (!c.ok) t.setOnClickListener(v -> fix(c.step));
            steps.addView(t);
        }
        StringBuilder s = new StringBuilder();
        if (core.paired()) {
            s.append(getString(R.string.status_title)).append(' ').append(core.status().describe(DateFormat.getTimeInstance(DateFormat.SHORT)));
            if (!core.stateDetail().isEmpty() && core.state() == AgentRunner.State.RESTARTING) {
                s.append("\nThe agent restarts: ").append(core.stateDetail());
            }
        }
        if (!core.lastRefused().isEmpty()) s.append('\n').append(core.lastRefused());
        statusText.setText(s.toString());
        unpairButton.setVisibility(core.paired() ? View.VISIBLE : View.GONE);
        pairButton.setEnabled(!pairing);
    }

    /** The action that fixes a step. */
    void fix(SetupChecks.Step step) {
        switch (step) {
            case SMS:
                List<String> missing = new ArrayList<>();
                for (String p : SMS_PERMISSIONS) if (checkSelfPermission(p) != PackageManager.PERMISSION_GRANTED) missing.add(p);
                if (!missing.isEmpty()) requestPermissions(missing.toArray(new String[0]), REQ_SMS);
                break;
            case NOTIFICATIONS:
                if (Build.VERSION.SDK_INT >= 33 && checkSelfPermission(Manifest.permission.POST_NOTIFICATIONS) != PackageManager.PERMISSION_GRANTED) {
                    requestPermissions(new String[] {Manifest.permission.POST_NOTIFICATIONS}, REQ_NOTIFY);
                } else {
                    startActivity(new Intent(Settings.ACTION_APP_NOTIFICATION_SETTINGS).putExtra(Settings.EXTRA_APP_PACKAGE, getPackageName()));
                }
                break;
            case BATTERY:
                startActivity(new Intent(Settings.ACTION_REQUEST_IGNORE_BATTERY_OPTIMIZATIONS, Uri.parse("package:" + getPackageName())));
                break;
            case PAIRED:
                linkField.requestFocus();
                break;
            case CONNECTED:
                AgentService.start(this);
                break;
            case MESSAGING_APP:
                open(new Intent(Settings.ACTION_MANAGE_DEFAULT_APPS_SETTINGS));
                break;
            case NOTIFICATION_ACCESS:
                open(new Intent(Settings.ACTION_NOTIFICATION_LISTENER_SETTINGS));
                break;
            case ACCESSIBILITY:
                open(new Intent(Settings.ACTION_ACCESSIBILITY_SETTINGS));
                break;
            case RESTRICTED_SETTINGS:
                open(new Intent(Settings.ACTION_APPLICATION_DETAILS_SETTINGS, Uri.parse("package:" + getPackageName())));
                break;
            case CONTACTS:
                requestPermissions(new String[] {Manifest.permission.READ_CONTACTS}, REQ_CONTACTS);
                break;
        }
    }

    /** Opens a settings screen; some phones lack one, which is said rather than crashing. */
    private void open(Intent i) {
        try {
            startActivity(i);
        } catch (RuntimeException e) {
            pairMessage.setText("This phone has no such settings screen; look for it in the Settings app.");
        }
    }

    /** The platform's state for the RCS steps. */
    private final RcsSetup.Phone rcsPhone = new RcsSetup.Phone() {
        @Override
        public int sdk() {
            return Build.VERSION.SDK_INT;
        }

        @Override
        public String defaultSmsApp() {
            return core.rcs.defaultSmsApp();
        }

        @Override
        public String label(String pkg) {
            try {
                return getPackageManager().getApplicationLabel(getPackageManager().getApplicationInfo(pkg, 0)).toString();
            } catch (PackageManager.NameNotFoundException | RuntimeException e) {
                return pkg;
            }
        }

        @Override
        public boolean notificationAccess() {
            return core.rcs.notificationAccessGranted();
        }

        @Override
        public boolean accessibility() {
            return core.rcs.accessibilityGranted();
        }

        @Override
        public boolean contacts() {
            return checkSelfPermission(Manifest.permission.READ_CONTACTS) == PackageManager.PERMISSION_GRANTED;
        }
    };

    @Override
    public void onRequestPermissionsResult(int req, String[] permissions, int[] results) {
        boolean denied = false;
        for (int r : results) if (r != PackageManager.PERMISSION_GRANTED) denied = true;
        if (denied && req == REQ_SMS) {
            boolean canAsk = false;
            for (String p : permissions) if (shouldShowRequestPermissionRationale(p)) canAsk = true;
            if (!canAsk) {
                // "Don't ask again": only the app's settings page can grant it now.
                new AlertDialog.Builder(this).setMessage(R.string.sms_denied)
                        .setPositiveButton(R.string.open_settings, (d, w) -> startActivity(
                                new Intent(Settings.ACTION_APPLICATION_DETAILS_SETTINGS, Uri.parse("package:" + getPackageName()))))
                        .setNegativeButton(android.R.string.cancel, null).show();
            }
        }
        refresh();
        if (core.paired()) {
            AgentService.start(this);
            synchronized (core) {
                if (core.runner != null) core.runner.refreshCaps(); // e.g. SMS allowed: new caps
            }
        }
    }

    /** An rcsgate://pair link from the camera or a browser: fill it in and ask. */
    void handleLink(Intent intent) {
        if (intent == null || !Intent.ACTION_VIEW.equals(intent.getAction()) || intent.getData() == null) return;
        String link = intent.getData().toString();
        linkField.setText(link);
        confirmPair(link);
    }

    void confirmPair(String text) {
        final PairLink link;
        try {
            link = PairLink.parse(text);
        } catch (PairLink.Invalid e) {
            pairMessage.setText(e.getMessage());
            return;
        }
        pairMessage.setText("");
        String msg = getString(R.string.pair_confirm, link.server());
        if (core.paired()) msg += "\n\n" + getString(R.string.pair_replaces);
        new AlertDialog.Builder(this).setMessage(msg)
                .setPositiveButton(R.string.pair, (d, w) -> pair(link))
                .setNegativeButton(android.R.string.cancel, null).show();
    }

    private void pair(final PairLink link) {
        pairing = true;
        pairMessage.setText(R.string.pairing);
        refresh();
        new Thread(() -> {
            stopAgent();
            List<String> argv = Pairing.argv(core.agentPath(), core.agentState, Core.deviceName(), null, link);
            final Pairing.Outcome out = Pairing.run(argv, Pairing.TIMEOUT_MS);
            runOnUiThread(() -> {
                pairing = false;
                pairMessage.setText(out.message);
                if (out.ok) {
                    linkField.setText("");
                    AgentService.resetBackfill(this);
                    AgentService.start(this);
                }
                refresh();
            });
        }, "rcsgate-pair").start();
    }

    /** Stops the service and waits for the agent to exit (it holds the state directory). */
    private void stopAgent() {
        AgentService.stop(this);
        AgentRunner r;
        synchronized (core) {
            r = core.runner;
            core.runner = null;
        }
        if (r != null) {
            try {
                r.stop();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    void confirmUnpair() {
        int waiting = core.inbox.size() + core.status().out;
        String msg = getString(R.string.unpair_confirm);
        if (waiting > 0) msg += "\n\n" + getString(R.string.unpair_waiting, waiting);
        new AlertDialog.Builder(this).setMessage(msg)
                .setPositiveButton(R.string.unpair, (d, w) -> unpair())
                .setNegativeButton(android.R.string.cancel, null).show();
    }

    private void unpair() {
        new Thread(() -> {
            stopAgent();
            deleteTree(core.agentState);
            try {
                core.inbox.clear();
            } catch (java.io.IOException e) {
                core.log.line("app: inbox not cleared: " + e.getMessage());
            }
            AgentService.resetBackfill(this);
            core.setStatus(AgentStatus.UNKNOWN);
            runOnUiThread(this::refresh);
        }, "rcsgate-unpair").start();
    }

    static void deleteTree(File f) {
        File[] kids = f.listFiles();
        if (kids != null) for (File k : kids) deleteTree(k);
        f.delete();
    }

    // SetupChecks.Phone: the live state of the platform and the agent.

    @Override
    public boolean smsPermissions() {
        for (String p : SMS_PERMISSIONS) if (checkSelfPermission(p) != PackageManager.PERMISSION_GRANTED) return false;
        return true;
    }

    @Override
    public boolean notificationsAllowed() {
        return getSystemService(NotificationManager.class).areNotificationsEnabled();
    }

    @Override
    public boolean batteryExempt() {
        PowerManager pm = getSystemService(PowerManager.class);
        return pm != null && pm.isIgnoringBatteryOptimizations(getPackageName());
    }

    @Override
    public boolean paired() {
        return core.paired();
    }

    @Override
    public AgentRunner.State runner() {
        return core.state();
    }

    @Override
    public AgentStatus status() {
        return core.status();
    }
}
