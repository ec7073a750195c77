package net.rcsgate.phone.rcs;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import net.rcsgate.phone.it.FakeMessagingApp;
import org.junit.Before;
import org.junit.Test;

/** The compose screen driven on fixture windows (src/fixtures/ui) with a test clock. */
public class ComposeDriverTest {
    FakeMessagingApp app;
    Fakes.Clock clock;
    ComposeDriver driver;
    List<String> outcomes;
    int gates;
    boolean gateOpen;

    @Before
    public void setUp() {
        app = new FakeMessagingApp();
        app.installed.add(MessagingApp.GOOGLE);
        app.installed.add(MessagingApp.SAMSUNG);
        clock = new Fakes.Clock();
        driver = new ComposeDriver(app, clock, null);
        outcomes = new ArrayList<>();
        gates = 0;
        gateOpen = true;
    }

    void submit(String pkg, String screen, String number, String text) {
        app.screens.put(pkg, screen);
        driver.submit(new ComposeDriver.Job("$ev" + outcomes.size(), MessagingApp.of(pkg), number, text, () -> {
            gates++;
            return gateOpen;
        }, new ComposeDriver.Outcome() {
            @Override
            public void sent() {
                outcomes.add("SENT");
            }

            @Override
            public void failed(boolean permanent, boolean pressed, String reason) {
                outcomes.add("FAILED " + (permanent ? "permanent" : "transient") + (pressed ? " pressed" : "") + ": " + reason);
            }
        }));
    }

    /** Ticks as window events would, moving the clock, until the job ends or time is up. */
    void run(long maxMs) {
        int before = outcomes.size();
        for (long t = 0; t <= maxMs && outcomes.size() == before; t += 250) {
            driver.tick();
            clock.now += 250;
        }
    }

    void sends(String pkg, String screen) {
        submit(pkg, screen, "+12025550123", "hello from Matrix");
        run(20000);
        assertEquals(screen, Collections.singletonList("SENT"), outcomes);
        assertEquals(1, app.sent.size());
        assertEquals("+12025550123", app.sent.get(0).number);
        assertEquals("hello from Matrix", app.sent.get(0).text);
        assertEquals(1, gates);
        assertEquals("left the app afterwards", 1, app.leaves);
    }

    @Test
    public void googleComposeScreen() {
        app.showAfter = 3; // the app takes a few looks to come up
        sends(MessagingApp.GOOGLE, "google-compose");
    }

    @Test
    public void googleLegacyScreen() {
        sends(MessagingApp.GOOGLE, "google-legacy");
    }

    @Test
    public void samsungScreen() {
        sends(MessagingApp.SAMSUNG, "samsung-compose");
    }

    @Test
    public void samsungInGermanFoundByLabelNotSendLater() {
        sends(MessagingApp.SAMSUNG, "samsung-compose-de");
    }

    @Test
    public void samsungInHebrewFoundById() {
        sends(MessagingApp.SAMSUNG, "samsung-compose-he");
    }

    @Test
    public void missingSendButtonFailsWithTheReasonAndPressesNothing() {
        long start = clock.now;
        submit(MessagingApp.GOOGLE, "google-no-send", "+12025550123", "hello");
        run(20000);
        assertEquals(1, outcomes.size());
        assertTrue(outcomes.get(0), outcomes.get(0).startsWith("FAILED permanent: could not find the Send button in Google Messages (its screen may have changed"));
        assertTrue(app.sent.isEmpty());
        assertEquals("never got to pressing", 0, gates);
        assertTrue("gave up only after the screen had time to load", clock.now - start >= ComposeDriver.OPEN_MS);
    }

    @Test
    public void lockedPhoneWaits() {
        app.locked = true;
        submit(MessagingApp.GOOGLE, "google-compose", "+12025550123", "hello");
        assertEquals(Collections.singletonList("FAILED transient: the phone is locked: the message waits until it is unlocked"), outcomes);
        assertTrue(app.sent.isEmpty());
    }

    @Test
    public void appNotInstalledOrServiceOff() {
        app.installed.clear();
        submit(MessagingApp.GOOGLE, "google-compose", "+12025550123", "hello");
        assertEquals("FAILED permanent: Google Messages is not installed on the phone", outcomes.get(0));
        app.connected = false;
        submit(MessagingApp.GOOGLE, "google-compose", "+12025550123", "hello");
        assertTrue(outcomes.get(1), outcomes.get(1).startsWith("FAILED permanent: rcsgate's accessibility service is off"));
    }

    @Test
    public void notConfirmedAfterThePressIsPermanentAndSaysSo() {
        app.swallow = true; // the press does nothing visible
        submit(MessagingApp.GOOGLE, "google-compose", "+12025550123", "hello");
        run(30000);
        assertEquals(1, outcomes.size());
        assertTrue(outcomes.get(0), outcomes.get(0).startsWith("FAILED permanent pressed: pressed Send in Google Messages, but the message did not show"));
    }

    @Test
    public void aScreenThatNeverShowsIsRetriedThenGivenUp() {
        app.showAfter = Integer.MAX_VALUE;
        app.screens.put(MessagingApp.GOOGLE, "google-compose");
        for (int i = 0; i < ComposeDriver.MAX_OPEN_TRIES; i++) {
            driver.submit(new ComposeDriver.Job("$same", MessagingApp.of(MessagingApp.GOOGLE), "+12025550123", "hello", () -> true,
                    new ComposeDriver.Outcome() {
                        @Override
                        public void sent() {
                            outcomes.add("SENT");
                        }

                        @Override
                        public void failed(boolean permanent, boolean pressed, String reason) {
                            outcomes.add((permanent ? "permanent: " : "transient: ") + reason);
                        }
                    }));
            run(20000);
        }
        assertEquals(3, outcomes.size());
        assertTrue(outcomes.get(0), outcomes.get(0).startsWith("transient: Google Messages did not show its compose screen; will retry"));
        assertTrue(outcomes.get(2), outcomes.get(2).startsWith("permanent: Google Messages did not show its compose screen (3 tries)"));
    }

    @Test
    public void aDraftThatIsNotOursIsNotSent() {
        // The text field holds something else (the app kept an old draft instead of ours).
        app.showAfter = 1;
        submit(MessagingApp.GOOGLE, "google-compose", "+12025550123", "hello");
        // Replace the draft behind the driver's back before it looks.
        FakeMessagingApp other = app;
        other.open(MessagingApp.GOOGLE, "+12025550123", "an old draft");
        run(20000);
        assertTrue(outcomes.get(0), outcomes.get(0).startsWith("FAILED permanent: the text field in Google Messages held other text (a draft?)"));
        assertTrue(app.sent.isEmpty());
    }

    @Test
    public void noPressWhenTheSendCannotBeRecorded() {
        gateOpen = false;
        submit(MessagingApp.GOOGLE, "google-compose", "+12025550123", "hello");
        run(20000);
        assertTrue(outcomes.get(0), outcomes.get(0).startsWith("FAILED transient: the phone could not record the send"));
        assertTrue(app.sent.isEmpty());
    }

    @Test
    public void jobsRunOneAfterAnother() {
        submit(MessagingApp.GOOGLE, "google-compose", "+12025550123", "first");
        submit(MessagingApp.GOOGLE, "google-compose", "+12025550124", "second");
        assertTrue(driver.busy());
        run(20000);
        run(20000);
        assertEquals(Collections.nCopies(2, "SENT"), outcomes);
        assertEquals("first", app.sent.get(0).text);
        assertEquals("+12025550124", app.sent.get(1).number);
        assertFalse(driver.busy());
    }

    @Test
    public void alreadyShownTextIsNotTakenAsConfirmation() {
        // The conversation shows "See you!" already (google-compose): sending it again must still
        // see one more.
        app.swallow = true;
        submit(MessagingApp.GOOGLE, "google-compose", "+12025550123", "See you!");
        run(30000);
        assertTrue(outcomes.get(0), outcomes.get(0).startsWith("FAILED permanent pressed"));
    }
}
