# NixOS VM test (pkgs.testers.runNixOSTest): the appliance boots (tuwunel + rcsgate with
# its HTTPS front and socket units), a phone simulator on a second machine pairs over QUIC,
# and a Matrix user (matrix-nio, as nixpkgs' mautrix-meta tests do) exchanges a message with
# the simulator's echo contact through the bridge.
{ self }:
{ lib, pkgs, ... }:

let
  domain = "server";
  user = "alice";
  password = "correct-horse-battery";
  echoNumber = "+12025550100"; # the simulator's echo contact answers with the same text

  matrixScript =
    name: body:
    pkgs.writers.writePython3Bin name {
      libraries = [ pkgs.python3Packages.matrix-nio ];
      flakeIgnore = [ "E501" ];
    } body;

  register = matrixScript "register-alice" ''
    import asyncio

    import nio


    async def main() -> None:
        client = nio.AsyncClient("http://127.0.0.1:6167", "${user}")
        response = await client.register("${user}", "${password}")
        print("register:", response)
        assert isinstance(response, nio.RegisterResponse), response
        await client.close()


    asyncio.run(main())
  '';

  exchange = matrixScript "exchange-message" ''
    import asyncio
    import time

    import nio

    BOT = "@rcsbot:${domain}"
    ME = "@${user}:${domain}"
    TEXT = "hello from matrix, through rcsgate"


    async def sync_until(client, found, what, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = await client.sync(timeout=3000)
            assert isinstance(response, nio.SyncResponse), response
            result = found(response)
            if result:
                return result
        raise TimeoutError("timed out waiting for " + what)


    async def main() -> None:
        client = nio.AsyncClient("http://127.0.0.1:6167", ME)
        response = await client.login("${password}")
        assert isinstance(response, nio.LoginResponse), response
        await client.sync(timeout=3000)

        response = await client.room_create(invite=[BOT], is_direct=True)
        assert isinstance(response, nio.RoomCreateResponse), response
        management = response.room_id
        await sync_until(
            client,
            lambda r: BOT in client.rooms[management].users,
            "the bridge bot to join",
        )

        response = await client.room_send(
            management,
            "m.room.message",
            {"msgtype": "m.text", "body": "start-chat ${echoNumber}"},
        )
        assert isinstance(response, nio.RoomSendResponse), response

        def invited(r):
            rooms = [room for room in r.rooms.invite if room != management]
            return rooms[0] if rooms else None

        portal = await sync_until(client, invited, "the portal room invite")
        response = await client.join(portal)
        assert isinstance(response, nio.JoinResponse), response

        response = await client.room_send(
            portal, "m.room.message", {"msgtype": "m.text", "body": TEXT}
        )
        assert isinstance(response, nio.RoomSendResponse), response

        def echoed(r):
            room = r.rooms.join.get(portal)
            if room is None:
                return None
            for event in room.timeline.events:
                if isinstance(event, nio.RoomMessageText) and event.sender != ME and event.body == TEXT:
                    return event.sender
            return None

        sender = await sync_until(client, echoed, "the echo contact's answer")
        print("echo from", sender)
        assert sender.startswith("@rcs_"), sender
        await client.close()


    asyncio.run(main())
  '';
in
{
  name = "rcsgate-appliance";

  nodes = {
    server =
      { ... }:
      {
        imports = [ self.nixosModules.appliance ];
        services.rcsgate.domain = domain; # selfsigned TLS: no acmeEmail
        services.matrix-tuwunel.settings.global = {
          allow_registration = true;
          yes_i_am_very_very_sure_i_want_an_open_registration_server_prone_to_abuse = true;
          allow_federation = false;
        };
        virtualisation.memorySize = 2048;
        environment.systemPackages = [
          register
          exchange
        ];
      };

    phone =
      { pkgs, ... }:
      {
        environment.systemPackages = [
          self.packages.${pkgs.stdenv.hostPlatform.system}.rcsgate-agent
          pkgs.curl
        ];
      };
  };

  testScript =
    { nodes, ... }:
    let
      renderedSettings = nodes.server.services.rcsgate.configFile;
    in
    ''
      start_all()

      with subtest("the appliance comes up: setup, tuwunel, rcsgate (Type=notify)"):
          server.wait_for_unit("rcsgate-setup.service")
          server.wait_for_unit("tuwunel.service")
          server.wait_for_unit("rcsgate.service")
          server.wait_for_open_port(6167)
          for unit in ["rcsgate-appservice.socket", "rcsgate-https.socket", "rcsgate-http.socket", "rcsgate-quic.socket"]:
              server.succeed(f"systemctl is-active {unit}")
          server.succeed("systemctl show rcsgate.service -p StatusText | grep -v '^StatusText=$'")

      with subtest("secrets: generated at first boot, private, never in the store"):
          server.succeed("test \"$(stat -c %a /var/lib/private/rcsgate/secrets.yaml)\" = 600")
          server.succeed("test \"$(stat -c %a /var/lib/private/rcsgate/config.yaml)\" = 600")
          server.succeed("grep -q as_token: /var/lib/private/rcsgate/config.yaml")
          server.fail("grep -E 'as_token|hs_token|id_key' ${renderedSettings}")
          as_token = server.succeed("grep as_token: /var/lib/private/rcsgate/registration.yaml | awk '{print $2}'").strip()
          server.fail(f"grep -rqF -- '{as_token}' /nix/store/*-rcsgate-settings.yaml")
          server.succeed("systemctl show tuwunel.service -p LoadCredential | grep -qF rcsgate-registration.yaml:/var/lib/rcsgate/registration.yaml")

      with subtest("secrets survive a restart of the setup unit"):
          before = server.succeed("cat /var/lib/private/rcsgate/secrets.yaml")
          server.succeed("systemctl restart rcsgate-setup.service")
          server.succeed("systemctl restart rcsgate.service")
          server.wait_for_unit("rcsgate.service")
          assert before == server.succeed("cat /var/lib/private/rcsgate/secrets.yaml")

      with subtest("the HTTPS front answers for the Matrix client API"):
          phone.wait_until_succeeds("curl -ksf https://${domain}/_matrix/client/versions", timeout=120)

      with subtest("a Matrix user"):
          server.succeed("register-alice >&2")

      with subtest("pair a simulated phone over QUIC"):
          link = server.succeed("rcsgate pair --user @${user}:${domain} --name phone").strip().splitlines()[-1]
          assert link.startswith("rcsgate://pair?"), link
          phone.succeed(f"rcsgate-agent pair --state /var/lib/agent '{link}' >&2")
          phone.succeed("systemd-run --unit=rcsgate-agent rcsgate-agent run --state /var/lib/agent --backend sim")
          device = phone.succeed("rcsgate-agent id --state /var/lib/agent").strip()
          server.wait_until_succeeds(f"rcsgate status | grep -F -- '{device}' | grep -qw active", timeout=120)

      with subtest("exchange a message: Matrix -> bridge -> phone -> echo -> Matrix"):
          server.succeed("exchange-message >&2")

      with subtest("the journal carries no message body"):
          server.fail("journalctl -u rcsgate -o cat | grep -F 'hello from matrix'")
    '';
}
