// Herald's chat page (GET /) in headless Chromium, driven by puppeteer-core: two tabs open the
// page on one transport, each sees the other in "Here", and they exchange messages. Herald's
// own metrics confirm that both tabs hold a connection of that transport, and the page must
// load without a script error or a Content-Security-Policy violation.
//
// Usage: node page.mjs BASE_URL [WebSockets|ServerSentEvents|LongPolling] [SCREENSHOT.png]
// CHROMIUM names the browser (default /usr/bin/chromium).
// Exits 0 when every step behaved as expected, 1 with the failing step otherwise.

import puppeteer from "puppeteer-core";

const [base, transport = "WebSockets", screenshot] = process.argv.slice(2);
if (!base) {
  console.error("usage: node page.mjs BASE_URL [WebSockets|ServerSentEvents|LongPolling] [SCREENSHOT.png]");
  process.exit(2);
}
const STEP_TIMEOUT_MS = 15_000;

let step = "launch Chromium";
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  // --no-sandbox: test machines and containers run as root, where Chromium's sandbox cannot.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
});

const problems = [];

/** A tab on the page, as `name`, over the transport under test. */
async function open(name) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1000, height: 640 });
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on("pageerror", (e) => problems.push(`${name}: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`${name}: console: ${m.text()}`);
  });
  await page.evaluateOnNewDocument((n) => sessionStorage.setItem("herald-name", n), name);
  await page.goto(`${base}/?transport=${transport}`);
  await page.waitForSelector('#status[data-state="connected"]');
  return page;
}

/** Waits until `page` lists someone called `name` in "Here". */
function sees(page, name) {
  return page.waitForFunction(
    (n) => [...document.querySelectorAll("#people li .name")].some((e) => e.textContent === n),
    { polling: "mutation" },
    name,
  );
}

/** `page` sends `text` through the form. */
async function say(page, text) {
  await page.bringToFront();
  await page.type("#text", text);
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("#text").value === "", { polling: 50 });
}

/** Waits until `page` shows a message `text` from `from`. */
function hears(page, from, text) {
  return page.waitForFunction(
    (f, t) =>
      [...document.querySelectorAll("#messages li")].some(
        (li) => li.querySelector(".body")?.textContent === t && li.querySelector(".from")?.textContent.startsWith(`${f} `),
      ),
    { polling: "mutation" },
    from,
    text,
  );
}

/** The value of `herald_connections{hub="chat",transport=…}` on Herald's /metrics. */
async function open_connections(kind) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`herald_connections{hub="chat",transport="${kind}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

try {
  step = "alice opens the page";
  const alice = await open("alice");
  step = "bob opens the page";
  const bob = await open("bob");
  step = "bob sees alice here (she was there first)";
  await sees(bob, "alice");
  step = "alice sees bob here";
  await sees(alice, "bob");
  step = "the count says two";
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => document.querySelector("#count").textContent === "2", { polling: "mutation" });
  }
  step = `both connections use ${transport}`;
  const held = await open_connections(transport.toLowerCase());
  if (held !== 2) throw new Error(`/metrics shows ${held} open ${transport} connections of the chat hub, not 2`);

  step = "alice says hello, bob hears it";
  await say(alice, "hello bob");
  await hears(bob, "alice", "hello bob");
  step = "alice sees her own message as hers";
  await alice.waitForSelector("#messages li.mine");
  step = "bob answers, alice hears it";
  await say(bob, "hi alice <b>not bold</b>");
  await hears(alice, "bob", "hi alice <b>not bold</b>");
  step = "markup in a message stays text";
  if (await alice.$("#messages b")) throw new Error("a message's markup was rendered");

  if (screenshot) {
    step = "screenshot";
    await alice.screenshot({ path: screenshot });
  }

  step = "bob leaves, alice sees him go";
  await bob.close();
  await alice.waitForFunction(
    () => ![...document.querySelectorAll("#people li .name")].some((e) => e.textContent === "bob"),
    { polling: "mutation" },
  );
  step = "no script errors";
  if (problems.length) throw new Error(problems.join("\n"));
  console.log("all steps passed");
} catch (e) {
  console.log(`not ok: ${step}: ${e.message}`);
  for (const page of await browser.pages()) {
    console.log(await page.evaluate(() => document.body?.innerText ?? "").catch(() => ""));
  }
  if (problems.length) console.log(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}
