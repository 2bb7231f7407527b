"""The control center in a real browser (headless Chromium through Selenium).

Starts a node on free loopback ports with a temporary data dir and walks through what an
operator does: sign in as root, create a product and a device through the forms (a bad one is
refused with the API's message next to its field), watch the device go online when a real MQTT
client (mosquitto_sub) connects with its credentials, subscribe from the browser over MQTT on
WebSocket and publish through the REST API, try a rule's SQL, disable the device and see it
kicked, create a viewer and sign in as the viewer (no edit buttons; a forced write is refused),
change root's password and sign in again, switch to Chinese, and use a phone-sized window.
A screenshot of every page goes to the folder given as the first argument.

    console_test.py SCREENSHOT_DIR      (REALMQ_BIN: the node binary)
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT = 20


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Node:
    def __init__(self, binary, workdir):
        self.mqtt, self.api_port, self.cluster, self.ws = free_ports(4)
        self.log = open(os.path.join(workdir, "node.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "--data-dir", os.path.join(workdir, "data"),
             "--mqtt-addr", f"127.0.0.1:{self.mqtt}", "--api-addr", f"127.0.0.1:{self.api_port}",
             "--cluster-addr", f"127.0.0.1:{self.cluster}", "--ws-addr", f"127.0.0.1:{self.ws}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.api_port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.base}/api/v1/ready", timeout=2)
                return
            except Exception:
                time.sleep(0.2)
        raise SystemExit("the node did not become ready")

    def api(self, method, path, body=None, user="root", password="123456"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}/api/v1/{path}", data=data, method=method)
        cred = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {cred}")
        req.add_header("Content-Type", "application/json")
        return json.load(urllib.request.urlopen(req, timeout=5))

    def api_get(self, path, **kw):
        return self.api("GET", path, **kw)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class Console:
    def __init__(self, node, shots):
        opts = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--lang=en-US"):
            opts.add_argument(arg)
        opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        self.d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
        self.node = node
        self.shots = shots
        self.wait = WebDriverWait(self.d, WAIT)

    def open(self, page=""):
        self.d.get(f"{self.node.base}/{page}")

    def go(self, hash_):
        self.d.execute_script("location.hash = arguments[0]", hash_)

    def find(self, css):
        return self.wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))

    def visible(self, css):
        return self.wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def click(self, css):
        self.wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, css))).click()

    def button(self, text, within="body"):
        """Clicks the button whose text is `text` (retried while a poll redraws it)."""
        xpath = f"//button[normalize-space()='{text}']"

        def attempt(d):
            try:
                scope = d.find_element(By.CSS_SELECTOR, within)
                for b in scope.find_elements(By.XPATH, "." + xpath):
                    if b.is_displayed() and b.is_enabled():
                        b.click()
                        return True
            except StaleElementReferenceException:
                return False
            return False
        self.wait.until(attempt, f"no button {text!r} in {within}")

    def fill(self, form, values):
        for name, value in values.items():
            el = self.find(f"#{form} [name='{name}']")
            if el.tag_name == "select":
                Select(el).select_by_value(value)
            else:
                el.clear()
                el.send_keys(value)

    def text_appears(self, css, text):
        self.wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text),
                        f"{text!r} never appeared in {css}")

    def shot(self, name):
        time.sleep(0.3)  # let a chart or a toast finish drawing
        path = os.path.join(self.shots, f"{name}.png")
        self.d.save_screenshot(path)
        print(f"  screenshot {path}")

    def sign_in(self, user, password):
        self.open("#/login")
        self.fill("login-form", {"username": user, "password": password})
        # Submitted from the keyboard: Enter in the password field.
        self.find("#login-form [name='password']").send_keys(Keys.ENTER)
        self.text_appears("#who", user)

    def sign_in_refused(self, user, password):
        """A wrong password: the form shows the API's message and nobody is signed in."""
        self.find("#login-form")
        self.fill("login-form", {"username": user, "password": password})
        self.click("#login-form button[type=submit]")
        self.visible("#login-form .form-error, #login-form .field-error")
        assert self.d.find_element(By.ID, "who").text == ""

    def sign_out(self):
        self.click("#sign-out")
        self.find("#login-form")

    def no_missing_strings(self):
        body = self.d.find_element(By.TAG_NAME, "body").text
        assert "⟦" not in body, f"a string is missing from the language table: {body}"
        assert "[object " not in body and "undefined" not in body, f"a value drawn as text: {body}"

    def api_as_page(self, method, path, body=None):
        """A request made by page script with the signed-in user's token."""
        return self.d.execute_async_script("""
            const [method, path, body, done] = arguments;
            const s = JSON.parse(sessionStorage.getItem('realmq.session'));
            fetch('/api/v1/' + path, {method, headers: {'Content-Type': 'application/json',
                Authorization: 'Bearer ' + s.token}, body: body ? JSON.stringify(body) : undefined})
              .then(async (r) => done({status: r.status, body: await r.json()}));
        """, method, path, body)


def mqtt_connect(port, client_id, username, password):
    """A bare MQTT 3.1.1 connection that, unlike mosquitto_sub, does not reconnect."""
    def field(b):
        return len(b).to_bytes(2, "big") + b
    body = (field(b"MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big") + field(client_id.encode())
            + field(username.encode()) + field(password.encode()))
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall(bytes([0x10, len(body)]) + body)
    connack = sock.recv(4)
    assert connack[:2] == b"\x20\x02" and connack[3] == 0, f"CONNACK {connack!r}"
    return sock


def closed_by_broker(sock):
    """Whether the broker ends the connection (EOF, possibly after a DISCONNECT) in time."""
    deadline = time.time() + WAIT
    while time.time() < deadline:
        try:
            data = sock.recv(64)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True
        if not data:
            return True
    return False


def step(name):
    print(f"- {name}")


def main():
    shots = os.path.abspath(sys.argv[1])
    os.makedirs(shots, exist_ok=True)
    for old in os.listdir(shots):
        if old.endswith(".png"):
            os.remove(os.path.join(shots, old))
    binary = os.environ["REALMQ_BIN"]
    work = tempfile.mkdtemp(prefix="realmq-ui-")
    node = Node(binary, work)
    ui = Console(node, shots)
    sub = None
    try:
        step("the console is served with its assets, gzipped and revalidated")
        req = urllib.request.Request(f"{node.base}/console/js/main.js",
                                     headers={"Accept-Encoding": "gzip"})
        res = urllib.request.urlopen(req)
        assert res.headers["Content-Encoding"] == "gzip", res.headers
        assert res.headers["Content-Type"].startswith("text/javascript"), res.headers
        etag = res.headers["ETag"]
        req = urllib.request.Request(f"{node.base}/console/js/main.js",
                                     headers={"If-None-Match": etag})
        try:
            urllib.request.urlopen(req)
            raise AssertionError("a fresh ETag must answer 304")
        except urllib.error.HTTPError as e:
            assert e.code == 304, e.code

        step("sign in as root; a wrong password shows the API's message")
        ui.open()
        ui.find("#login-form")
        ui.shot("01-sign-in")
        ui.sign_in_refused("root", "wrong")
        ui.sign_in("root", "123456")
        ui.find("#stat-connections")
        ui.text_appears("#nodes", "leader")
        time.sleep(3.5)  # two samples, so the chart has a line
        ui.no_missing_strings()
        ui.shot("02-overview")

        step("create a product through the form")
        ui.go("#/products")
        ui.button("New product")
        ui.fill("product-form", {"name": "thermostats", "description": "UI test"})
        ui.click("#product-form button[type=submit]")
        ui.text_appears("#product-list", "thermostats")
        product = node.api_get("products?product_name=thermostats")["data"][0]
        pk = product["product_key"]
        ui.button("Secret", "#product-list")
        ui.text_appears("#secret", node.api_get(f"products/{product['id']}")["data"][0]["product_secret"])
        ui.shot("03-products-secret")
        ui.d.find_element(By.CSS_SELECTOR, "dialog .close").click()

        step("create a device through the form; a duplicate is refused next to its field")
        ui.go("#/devices")
        ui.button("New device")
        ui.fill("device-form", {"name": "hall", "product_key": pk})
        ui.click("#device-form button[type=submit]")
        ui.visible("#device-password")
        password = ui.find("#device-password").text
        assert len(password) == 32, password
        ui.shot("04-device-created")
        ui.d.find_element(By.CSS_SELECTOR, "dialog .close").click()
        ui.button("New device")
        ui.fill("device-form", {"name": "hall", "product_key": pk, "username": "hall2",
                                "mqtt_client_id": "hall2"})
        ui.click("#device-form button[type=submit]")
        err = ui.visible("#device-form [data-field='name'] .field-error")
        assert "name" in err.text, err.text
        ui.shot("05-device-error")
        ui.d.find_element(By.CSS_SELECTOR, "dialog .close").click()
        ui.text_appears("#device-list", "hall")
        ui.no_missing_strings()
        ui.shot("06-devices")

        step("the device list's filters: by name, by status, by product")
        search = ui.find("#device-search")
        search.send_keys("hal")
        ui.find("#device-search").send_keys(Keys.ENTER)
        ui.text_appears("#device-list", "hall")
        Select(ui.find("#device-status")).select_by_value("3")
        ui.button("Search", "form.filters")
        ui.text_appears("#device-list", "No devices match")
        Select(ui.find("#device-status")).select_by_value("1")
        ui.button("Search", "form.filters")
        ui.text_appears("#device-list", "hall")
        ui.go("#/products")
        ui.text_appears("#product-list", "thermostats")
        ui.d.find_element(By.CSS_SELECTOR, "#product-list a[href^='#/devices?product_key=']").click()
        ui.wait.until(lambda d: Select(d.find_element(By.ID, "device-product"))
                      .first_selected_option.get_attribute("value") == pk)
        ui.text_appears("#device-list", "hall")
        ui.no_missing_strings()

        step("the device goes online when an MQTT client connects with its credentials")
        device = node.api_get(f"devices?device_name=hall&product_key={pk}")["data"][0]
        ui.go(f"#/devices/{device['id']}")
        ui.text_appears("#device-detail [data-key='status']", "never connected")
        sub = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(node.mqtt), "-i", "hall",
             "-u", "hall", "-P", password, "-t", f"{pk}/hall/#", "-q", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ui.text_appears("#device-detail [data-key='status']", "online")
        ui.text_appears("#device-detail [data-key='ip']", "127.0.0.1")
        ui.text_appears("#device-subscriptions", f"{pk}/hall/#")
        ui.shot("07-device-online")

        step("the clients page lists it, and kicks a client")
        # A second device: a client id belongs to one device, and hall's is taken.
        node.api("POST", "devices", {"name": "panel", "product_key": pk, "username": "panel",
                                     "mqtt_client_id": "panel", "password": "panel-secret-1"})
        panel = mqtt_connect(node.mqtt, "panel", "panel", "panel-secret-1")
        ui.go("#/clients")
        ui.text_appears("#client-list", "hall")
        ui.text_appears("#client-list", "panel")
        ui.no_missing_strings()
        ui.shot("08-clients")
        row = ui.d.find_element(By.XPATH, "//div[@id='client-list']//tr[td[1][normalize-space()='panel']]")
        row.find_element(By.XPATH, ".//button[normalize-space()='Kick']").click()
        ui.button("Yes", "dialog")
        assert closed_by_broker(panel), "the kicked client is still connected"
        panel.close()
        ui.wait.until(lambda d: "panel" not in d.find_element(By.ID, "client-list").text)
        assert "hall" in ui.find("#client-list").text

        step("subscribe from the browser over MQTT on WebSocket; publish through the REST API")
        ui.go("#/pubsub")
        ui.wait.until(lambda d: d.find_element(
            By.CSS_SELECTOR, "#subscribe-form [name='url']").get_attribute("value").startswith("ws://"))
        ui.fill("subscribe-form", {"clientid": "panel", "username": "panel",
                                   "password": "wrong", "topic": f"{pk}/panel/#", "qos": "1"})
        ui.click("#subscribe-form button[type=submit]")
        err = ui.visible("#subscribe-form [data-field='username'] .field-error")
        assert "not authorized" in err.text, err.text
        ui.fill("subscribe-form", {"password": "panel-secret-1"})
        ui.click("#subscribe-form button[type=submit]")
        ui.text_appears("#ws-state", f"{pk}/panel/#")
        ui.fill("publish-form", {"topic": f"{pk}/panel/down", "payload": "hello from the console",
                                 "qos": "1"})
        ui.click("#publish-form button[type=submit]")
        ui.text_appears("#messages", "hello from the console")
        ui.shot("09-pubsub")
        ui.click("#ws-disconnect")

        step("a rule: its SQL tested in the editor, then created")
        ui.go("#/rules")
        ui.button("New rule")
        ui.fill("rule-form", {"name": "too-hot"})
        ui.click("#rule-test")
        ui.text_appears("#rule-test-output", '"temp": 42')
        ui.fill("rule-form", {"sql": "SELECT nosuchfunc(payload) FROM \"t/#\""})
        ui.click("#rule-test")
        ui.visible("#rule-form [data-field='sql'] .field-error")
        ui.fill("rule-form", {"sql": "SELECT payload.temp AS temp FROM \"sensors/+/temp\" WHERE payload.temp > 30"})
        ui.shot("10-rule-editor")
        ui.click("#rule-form button[type=submit]")
        ui.text_appears("#rule-list", "too-hot")
        ui.button("Metrics", "#rule-list")
        ui.text_appears("#rule-metrics", "matched")
        ui.no_missing_strings()
        ui.shot("11-rules")
        ui.d.find_element(By.CSS_SELECTOR, "dialog .close").click()

        step("disable the device: the page shows it, and the broker kicked it")
        ui.go(f"#/devices/{device['id']}")
        ui.text_appears("#device-detail [data-key='status']", "online")
        ui.button("Disable", ".page-head")
        ui.text_appears("#device-detail [data-key='status']", "disabled")
        deadline = time.time() + WAIT
        while time.time() < deadline and sub.poll() is None:
            time.sleep(0.2)
        assert sub.poll() is not None, "mosquitto_sub is still connected after the disable"
        clients = node.api_get("clients?clientid=hall")["data"]
        assert clients == [], clients
        ui.shot("12-device-disabled")

        step("create a viewer; as the viewer no edit buttons, and a forced write is refused")
        ui.go("#/users")
        ui.button("New user")
        ui.fill("user-form", {"username": "watcher", "password": "watcher-pass-1", "role": "viewer"})
        ui.click("#user-form button[type=submit]")
        ui.text_appears("#user-list", "watcher")
        ui.shot("13-users")
        ui.sign_out()
        ui.sign_in("watcher", "watcher-pass-1")
        for page, marker in (("#/products", "#product-list table"), ("#/devices", "#device-list table"),
                             ("#/users", "#user-list table"), ("#/rules", "#rule-list table"),
                             ("#/clients", "#client-list")):
            ui.go(page)
            ui.find(marker)
            admin = [b.text for b in ui.d.find_elements(By.CSS_SELECTOR, "button.admin")]
            assert admin == [], f"{page} shows edit buttons to a viewer: {admin}"
        ui.go(f"#/devices/{device['id']}")
        ui.text_appears("#device-detail [data-key='status']", "disabled")
        assert ui.d.find_elements(By.CSS_SELECTOR, "button.admin") == []
        ui.shot("14-viewer-device")
        res = ui.api_as_page("POST", "products", {"name": "forced"})
        assert res["status"] in (401, 403) and res["body"]["code"] != 0, res
        assert node.api_get("products?product_name=forced")["meta"]["count"] == 0

        step("change root's password and sign in again")
        ui.sign_out()
        ui.sign_in("root", "123456")
        ui.go("#/users")
        ui.text_appears("#user-list", "root")
        row = ui.d.find_element(By.XPATH, "//div[@id='user-list']//tr[td[1][normalize-space()='root']]")
        row.find_element(By.XPATH, ".//button[normalize-space()='Change password']").click()
        ui.fill("password-form", {"password": "n3w-root-pass", "confirm": "n3w-root-pass"})
        ui.click("#password-form button[type=submit]")
        ui.sign_in_refused("root", "123456")
        ui.sign_in("root", "n3w-root-pass")

        step("the overview charts live traffic: a device publishing shows up in messages in / s")
        ui.go("#/overview")
        ui.find("#stat-in-rate")
        pub = subprocess.Popen(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(node.mqtt), "-i", "panel",
             "-u", "panel", "-P", "panel-secret-1", "-t", f"{pk}/panel/telemetry",
             "-m", '{"temp": 21.5}', "--repeat", "100000", "--repeat-delay", "0.005"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ui.wait.until(lambda d: d.find_element(
                By.CSS_SELECTOR, "#stat-in-rate .value").text not in ("0", ""),
                "messages in / s stayed at 0 while a device published")
            time.sleep(9)  # a few more samples for the chart
            ui.shot("15-overview-live")
        finally:
            pub.kill()
            pub.wait()

        step("the language switch: Chinese on every page, no string missing")
        Select(ui.find("#lang")).select_by_value("zh")
        for page in ("overview", "products", "devices", "clients", "users", "rules", "pubsub"):
            ui.go(f"#/{page}")
            ui.find(f".page-{page}")
            time.sleep(0.5)
            ui.no_missing_strings()
        ui.go("#/overview")
        ui.text_appears("#nav", "概览")
        ui.find("#stat-connections")
        time.sleep(3.5)
        ui.shot("16-overview-zh")
        Select(ui.find("#lang")).select_by_value("en")

        step("a phone-sized window: the menu folds behind a button")
        ui.d.set_window_size(390, 844)
        ui.go("#/devices")
        ui.find("#device-list table")
        nav = ui.d.find_element(By.ID, "nav")
        assert not nav.is_displayed(), "the navigation should be folded on a phone"
        ui.click("#menu-toggle")
        ui.visible("#nav a[href='#/devices']")
        ui.shot("17-phone-menu")
        ui.click("#nav a[href='#/devices']")
        ui.wait.until(lambda d: not d.find_element(By.ID, "nav").is_displayed())
        ui.shot("18-phone-devices")
        print(f"console test: PASS; screenshots in {shots}")
    except Exception:
        try:
            ui.shot("failure")
        except Exception:
            pass
        print(open(os.path.join(work, "node.log")).read()[-4000:])
        raise
    finally:
        if sub and sub.poll() is None:
            sub.kill()
        ui.d.quit()
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
