// Drives the chat room page in headless Chromium against a running local system and exits non-zero on
// the first failed expectation. Usage: node chat-browser-test.mjs PAGE_URL API_URL API_KEY
// The end-to-end suite (e2e) starts the system and runs this script.
import { chromium } from "playwright-core";

const [pageUrl, apiUrl, apiKey] = process.argv.slice(2);
if (!pageUrl || !apiUrl || !apiKey) {
  console.error("usage: node chat-browser-test.mjs PAGE_URL API_URL API_KEY");
  process.exit(2);
}
const TIMEOUT = 15000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

function step(name) { console.log(`- ${name}`); }

async function open(name) {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => { console.error(`page error (${name}): ${e}`); process.exitCode = 1; });
  await page.goto(pageUrl);
  await page.fill("#name", name);
  await page.click("#login button");
  await page.waitForSelector("#status[data-state=online]");
  return page;
}

const logText = (page) => page.evaluate(() => document.getElementById("log").textContent);
const sees = (page, text) => page.waitForFunction((t) => document.getElementById("log").textContent.includes(t), text);

async function say(page, text) {
  await page.fill("#text", text);
  await page.click("#send button");
}

async function system(message, room) {
  const path = room ? `/v1/channels/${room}/publish` : "/v1/broadcast";
  const r = await fetch(apiUrl + path, { method: "POST", headers: { authorization: `Bearer ${apiKey}` }, body: JSON.stringify({ type: "system", message }) });
  if (r.status !== 202) throw new Error(`publish answered ${r.status}`);
}

try {
  step("two pages in the same room see each other's messages");
  const alice = await open("alice");
  const bob = await open("bob");
  await say(alice, "hello from alice");
  await sees(bob, "hello from alice");
  await say(bob, "hi alice");
  await sees(alice, "hi alice");

  step("a late joiner gets the history");
  const carol = await open("carol");
  await sees(carol, "hello from alice");
  await sees(carol, "hi alice");

  step("a room change stops messages from the old room");
  await carol.click("button[data-room=support]");
  await carol.waitForSelector("button.room.current[data-room=support]");
  await say(alice, "only for general");
  await sees(bob, "only for general");
  await system("marker after general", "support");
  await sees(carol, "marker after general");
  if ((await logText(carol)).includes("only for general")) throw new Error("carol still received general's messages after leaving");

  step("a system broadcast reaches every page");
  await system("Maintenance at 18:00");
  await Promise.all([alice, bob, carol].map((p) => sees(p, "Maintenance at 18:00")));
  console.log("browser test passed");
} catch (e) {
  console.error(`browser test failed: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
