package net.rcsgate.phone;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import android.app.Activity;
import android.app.Application;
import android.app.PendingIntent;
import android.content.Intent;
import android.os.Looper;
import android.provider.Telephony;
import java.util.Collections;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.Result;
import org.json.JSONObject;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.robolectric.RobolectricTestRunner;
import org.robolectric.RuntimeEnvironment;
import org.robolectric.Shadows;
import org.robolectric.shadows.ShadowSmsManager;

@RunWith(RobolectricTestRunner.class)
public class SmsReceiverTest {
    // A GSM SMS-DELIVER PDU: from +31641600986, "How are you?" (3GPP TS 23.040 example).
    static final String PDU = "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07";

    private Application app;

    @Before
    public void setUp() {
        Core.resetForTests();
        app = RuntimeEnvironment.getApplication();
        Shadows.shadowOf(app).grantPermissions(android.Manifest.permission.SEND_SMS, android.Manifest.permission.READ_PHONE_STATE);
        Shadows.shadowOf(app.getPackageManager()).setSystemFeature(android.content.pm.PackageManager.FEATURE_TELEPHONY_MESSAGING, true);
    }

    @After
    public void tearDown() {
        Core.resetForTests();
    }

    static byte[] hex(String s) {
        byte[] b = new byte[s.length() / 2];
        for (int i = 0; i < b.length; i++) b[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        return b;
    }

    @Test
    public void receivedSmsIsStoredBeforeTheBroadcastReturns() {
        Intent i = new Intent(Telephony.Sms.Intents.SMS_RECEIVED_ACTION);
        i.putExtra("pdus", new Object[] {hex(PDU)});
        i.putExtra("format", "3gpp");
        new SmsReceiver().onReceive(app, i);
        Core core = Core.get(app);
        assertEquals(1, core.inbox.size());
        Event ev = core.inbox.waiting().get(0);
        assertEquals("+31641600986", ev.chat());
        assertEquals("How are you?", ev.text());
        assertTrue(ev.id().startsWith("sms-"));

        // The same broadcast again (a redelivery): stored once.
        new SmsReceiver().onReceive(app, i);
        assertEquals(1, core.inbox.size());
    }

    @Test
    public void unreadableBroadcastLosesNothingAndSaysSo() {
        Intent i = new Intent(Telephony.Sms.Intents.SMS_RECEIVED_ACTION);
        i.putExtra("pdus", new Object[] {new byte[] {1, 2, 3}});
        i.putExtra("format", "3gpp");
        new SmsReceiver().onReceive(app, i);
        assertEquals(0, Core.get(app).inbox.size());
    }

    @Test
    public void sendGoesThroughSmsManagerAndItsSentIntentAnswers() throws Exception {
        Core core = Core.get(app);
        assertTrue("SMS caps with the permission", core.smsPath.caps().containsKey("sms"));
        final Boolean[] ok = new Boolean[1];
        core.router.send(new Event(new JSONObject().put("id", "$ev1").put("chat", "+12025550123").put("text", "hello").put("transport", "sms")),
                new Result() {
                    @Override public void ok() { ok[0] = true; }
                    @Override public void fail(boolean permanent, String reason) { ok[0] = false; }
                });
        ShadowSmsManager.TextSmsParams p = Shadows.shadowOf(app.getSystemService(android.telephony.SmsManager.class)).getLastSentTextMessageParams();
        assertEquals("+12025550123", p.getDestinationAddress());
        assertEquals("hello", p.getText());
        PendingIntent sent = p.getSentIntent();
        sent.send(app, Activity.RESULT_OK, null);
        Shadows.shadowOf(Looper.getMainLooper()).idle();
        assertEquals(Boolean.TRUE, ok[0]);
        assertEquals(Collections.emptyList(), core.inbox.waiting());
    }
}
