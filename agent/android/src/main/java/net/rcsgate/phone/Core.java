package net.rcsgate.phone;

import android.content.Context;
import android.os.Build;
import java.io.File;
import java.io.IOException;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import net.rcsgate.phone.core.AgentRunner;
import net.rcsgate.phone.core.AgentStatus;
import net.rcsgate.phone.core.Inbox;
import net.rcsgate.phone.core.LogFile;
import net.rcsgate.phone.core.Router;
import net.rcsgate.phone.sms.SendLog;
import net.rcsgate.phone.sms.SmsPath;

/**
 * The app's one instance of everything (one process): the Inbox and the SMS path's SendLog in
 * private storage, the Router with its paths (SMS, then RCS through the messaging app), the agent's runner and its latest status. The
 * service, the receivers and the setup screen all reach the same objects through get().
 */
public final class Core {
    /** Something changed that the setup screen or the notification shows. */
    public interface Listener {
        void onChanged();
    }

    private static Core instance;

    public final Context app;
    public final File agentState;
    public final Inbox inbox;
    public final SendLog sends;
    public final AndroidSms sms;
    public final SmsPath smsPath;
    /** RCS through the messaging app: its path, listener and compose driver's state. */
    final RcsPhone rcs;
    public final Router router = new Router();
    public final ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor();
    public final LogFile log;
    private final CopyOnWriteArrayList<Listener> listeners = new CopyOnWriteArrayList<>();

    private volatile AgentStatus status = AgentStatus.UNKNOWN;
    private volatile AgentRunner.State state = AgentRunner.State.STOPPED;
    private volatile String stateDetail = "";
    private volatile String lastRefused = "";
    AgentRunner runner;

    private Core(Context c) throws IOException {
        app = c.getApplicationContext();
        File files = app.getFilesDir();
        agentState = new File(files, "agent");
        inbox = new Inbox(new File(files, "inbox.log"));
        sends = new SendLog(new File(files, "sends.log"));
        log = new LogFile(new File(files, "agent.log"));
        sms = new AndroidSms(app);
        smsPath = new SmsPath(sms, sends, inbox, System::currentTimeMillis);
        router.add(smsPath);
        rcs = new RcsPhone(app, files, inbox, this::capsChanged);
        router.add(rcs.path);
    }

    /**
     * A path's caps changed (notification access or the accessibility service turned on or off):
     * the agent says hello again (AgentRunner.refreshCaps restarts it; the journals make that lossless).
     */
    void capsChanged() {
        synchronized (this) {
            if (runner != null) runner.refreshCaps();
        }
        changed();
    }

    /** The instance; an IOException (storage broken) is fatal for the app and said so. */
    public static synchronized Core get(Context c) {
        if (instance == null) {
            try {
                instance = new Core(c);
            } catch (IOException e) {
                throw new IllegalStateException("rcsgate cannot open its files: " + e.getMessage(), e);
            }
        }
        return instance;
    }

    /** Forgets the instance (Robolectric gives every test a fresh app). */
    static synchronized void resetForTests() {
        instance = null;
    }

    /** The agent binary shipped in the APK (lib/ABI/libagent.so, extracted at install). */
    public String agentPath() {
        return app.getApplicationInfo().nativeLibraryDir + "/libagent.so";
    }

    public boolean paired() {
        return new File(agentState, "device.crt").exists();
    }

    /** The device name shown on the server. */
    public static String deviceName() {
        String m = Build.MODEL == null ? "" : Build.MODEL.trim();
        return m.isEmpty() ? "Android phone" : m;
    }

    public AgentStatus status() {
        return status;
    }

    public AgentRunner.State state() {
        return state;
    }

    public String stateDetail() {
        return stateDetail;
    }

    public String lastRefused() {
        return lastRefused;
    }

    void setStatus(AgentStatus s) {
        status = s;
        changed();
    }

    void setState(AgentRunner.State st, String detail) {
        state = st;
        stateDetail = detail == null ? "" : detail;
        changed();
    }

    void setRefused(String what) {
        lastRefused = what;
        changed();
    }

    public void addListener(Listener l) {
        listeners.add(l);
    }

    public void removeListener(Listener l) {
        listeners.remove(l);
    }

    void changed() {
        for (Listener l : listeners) l.onChanged();
    }
}
