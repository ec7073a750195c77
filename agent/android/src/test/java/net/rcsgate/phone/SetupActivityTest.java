package net.rcsgate.phone;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import android.Manifest;
import android.app.AlertDialog;
import android.content.Intent;
import android.net.Uri;
import android.view.View;
import android.widget.TextView;
import java.io.File;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.robolectric.Robolectric;
import org.robolectric.RobolectricTestRunner;
import org.robolectric.RuntimeEnvironment;
import org.robolectric.Shadows;
import org.robolectric.shadows.ShadowAlertDialog;

@RunWith(RobolectricTestRunner.class)
public class SetupActivityTest {
    static final String LINK = "rcsgate://pair?addr=gw.example.org%3A8443&token=0123456789abcdef0123&pin=n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg";

    @Before
    public void setUp() {
        Core.resetForTests();
    }

    @After
    public void tearDown() {
        Core.resetForTests();
    }

    static String text(SetupActivity a, int id) {
        return ((TextView) a.findViewById(id)).getText().toString();
    }

    static String step(SetupActivity a, String step) {
        View v = a.getWindow().getDecorView().findViewWithTag(step);
        assertNotNull("no step " + step, v);
        return ((TextView) v).getText().toString();
    }

    @Test
    public void aValidPairingLinkAsksBeforePairing() {
        Intent i = new Intent(Intent.ACTION_VIEW, Uri.parse(LINK));
        SetupActivity a = Robolectric.buildActivity(SetupActivity.class, i).setup().get();
        assertEquals(LINK, text(a, R.id.link));
        AlertDialog d = (AlertDialog) ShadowAlertDialog.getLatestDialog();
        assertNotNull("no confirmation", d);
        String msg = Shadows.shadowOf(d).getMessage().toString();
        assertTrue(msg, msg.contains("gw.example.org:8443"));
        assertEquals("", text(a, R.id.pair_message));
    }

    @Test
    public void aMalformedLinkSaysWhatIsWrong() {
        Intent i = new Intent(Intent.ACTION_VIEW, Uri.parse("rcsgate://pair?addr=gw.example.org&token=x"));
        SetupActivity a = Robolectric.buildActivity(SetupActivity.class, i).setup().get();
        assertTrue(text(a, R.id.pair_message), text(a, R.id.pair_message).contains("is not HOST:PORT"));
        assertEquals(null, ShadowAlertDialog.getLatestDialog());
        // The paste field says the same for pasted text.
        ((TextView) a.findViewById(R.id.link)).setText("https://example.org/");
        a.findViewById(R.id.pair).performClick();
        assertTrue(text(a, R.id.pair_message).contains("must start with rcsgate://pair?"));
    }

    @Test
    public void stepsFollowTheLiveState() {
        SetupActivity a = Robolectric.buildActivity(SetupActivity.class).setup().get();
        assertTrue(step(a, "SMS").startsWith("•"));
        assertTrue(step(a, "PAIRED").startsWith("•"));
        assertEquals(View.GONE, a.findViewById(R.id.unpair).getVisibility());

        Shadows.shadowOf(a.getApplication()).grantPermissions(Manifest.permission.SEND_SMS, Manifest.permission.RECEIVE_SMS,
                Manifest.permission.READ_SMS, Manifest.permission.READ_PHONE_STATE);
        Core core = Core.get(a);
        core.agentState.mkdirs();
        assertTrue(new File(core.agentState, "device.crt").exists() || touch(new File(core.agentState, "device.crt")));
        a.refresh();
        assertTrue(step(a, "SMS").startsWith("✓"));
        assertTrue(step(a, "PAIRED").startsWith("✓"));
        assertFalse(step(a, "CONNECTED").startsWith("✓"));
        assertEquals(View.VISIBLE, a.findViewById(R.id.unpair).getVisibility());

        // Tapping the SMS step asks for the permissions still missing.
        Shadows.shadowOf(a.getApplication()).denyPermissions(Manifest.permission.READ_SMS);
        a.refresh();
        a.fix(net.rcsgate.phone.core.SetupChecks.Step.SMS);
        String[] asked = Shadows.shadowOf(a).getLastRequestedPermission().requestedPermissions;
        assertEquals(1, asked.length);
        assertEquals(Manifest.permission.READ_SMS, asked[0]);
    }

    static boolean touch(File f) {
        try {
            return f.createNewFile();
        } catch (java.io.IOException e) {
            return false;
        }
    }
}
