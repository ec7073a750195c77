package net.rcsgate.phone;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import android.app.Application;
import android.app.Notification;
import android.content.Intent;
import java.io.File;
import net.rcsgate.phone.core.AgentRunner;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;
import org.junit.runner.RunWith;
import org.robolectric.Robolectric;
import org.robolectric.RobolectricTestRunner;
import org.robolectric.RuntimeEnvironment;
import org.robolectric.Shadows;
import org.robolectric.android.controller.ServiceController;

@RunWith(RobolectricTestRunner.class)
public class AgentServiceTest {
    private Application app;

    @Before
    public void setUp() {
        Core.resetForTests();
        app = RuntimeEnvironment.getApplication();
    }

    @After
    public void tearDown() {
        Core.resetForTests();
    }

    @Test
    public void notPairedStopsItself() {
        ServiceController<AgentService> c = Robolectric.buildService(AgentService.class).create();
        Notification n = Shadows.shadowOf(c.get()).getLastForegroundNotification();
        assertNotNull("not in the foreground", n);
        c.startCommand(0, 1);
        assertTrue(Shadows.shadowOf(c.get()).isStoppedBySelf());
        c.destroy();
    }

    @Test
    public void pairedRunsTheAgentAndRestartsIt() throws Exception {
        Core core = Core.get(app);
        core.agentState.mkdirs();
        assertTrue(new File(core.agentState, "device.crt").createNewFile());
        ServiceController<AgentService> c = Robolectric.buildService(AgentService.class, new Intent(app, AgentService.class)).create().startCommand(0, 1);
        assertNotNull(core.runner);
        // Robolectric has no libagent.so: the runner says so and keeps retrying.
        long end = System.currentTimeMillis() + 10000;
        while (!(core.state() == AgentRunner.State.RESTARTING && core.stateDetail().contains("cannot start the agent"))) {
            if (System.currentTimeMillis() > end) throw new AssertionError("runner state " + core.state() + " " + core.stateDetail());
            Thread.sleep(5); // polling a condition with a deadline
        }
        c.destroy();
        core.runner.stop();
        assertEquals(AgentRunner.State.STOPPED, core.state());
    }

    @Test
    public void bootStartsTheServiceOnlyWhenPaired() throws Exception {
        new BootReceiver().onReceive(app, new Intent(Intent.ACTION_BOOT_COMPLETED));
        assertEquals(null, Shadows.shadowOf(app).getNextStartedService());
        Core core = Core.get(app);
        core.agentState.mkdirs();
        assertTrue(new File(core.agentState, "device.crt").createNewFile());
        new BootReceiver().onReceive(app, new Intent(Intent.ACTION_BOOT_COMPLETED));
        Intent started = Shadows.shadowOf(app).getNextStartedService();
        assertNotNull("not started after boot", started);
        assertEquals(AgentService.class.getName(), started.getComponent().getClassName());
    }
}
