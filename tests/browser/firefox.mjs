// The Sandogh console in Debian's Firefox ESR, driven by puppeteer-core
// over WebDriver BiDi (playwright-core drives only its own patched
// Firefox builds; nothing here downloads a browser). Run by
// tests/tests/console_browser.rs after the Chromium script, with the same
// CONSOLE configuration. Each step prints "OK <step>"; a failure prints
// the step and the error and exits 1.
import puppeteer from "puppeteer-core";
import path from "node:path";

const cfg = JSON.parse(process.env.CONSOLE);
const base = cfg.url;
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: "/usr/bin/firefox-esr",
  headless: true,
  // The controller's certificate is issued by the fleet's own CA.
  acceptInsecureCerts: true,
});

async function step(name, fn) {
  try {
    await fn();
    console.log(`OK ${name}`);
  } catch (e) {
    console.log(`FAILED ${name}: ${e && e.stack ? e.stack : e}`);
    await browser.close().catch(() => {});
    process.exit(1);
  }
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

const page = await browser.newPage();
await page.setViewport({ width: 1366, height: 768 });

async function shot(name) {
  await page.screenshot({ path: path.join(cfg.screens, `${name}.png`), fullPage: true });
}

async function lang() {
  return page.$eval("html", (h) => [h.lang, h.dir]);
}

await step("firefox-sign-in-scope", async () => {
  await page.goto(`${base}/ui/login?lang=en`);
  await page.type("#token", cfg.tech);
  await Promise.all([page.waitForNavigation(), page.click("form[action='/ui/login'] button")]);
  check(page.url().endsWith("/ui/"), `at ${page.url()}`);
  if ((await lang())[0] !== "en") {
    await Promise.all([page.waitForNavigation(), page.click("form[action='/ui/lang'] button")]);
  }
  const rows = await page.$$eval("main table tbody tr th[scope=row]", (ths) => ths.map((t) => t.textContent.trim()));
  check(rows.length === 1 && rows[0] === "Mazandaran", `rows: ${rows}`);
  const text = await page.$eval("body", (b) => b.textContent);
  check(!text.includes("Tehran") && !text.includes("IR-23"), "another province shows");
  await shot("firefox-national-en");
});

await step("firefox-persian", async () => {
  await page.goto(`${base}/ui/rollouts`);
  await Promise.all([page.waitForNavigation(), page.click("form[action='/ui/lang'] button")]);
  const [l, dir] = await lang();
  check(l === "fa" && dir === "rtl", `${l} ${dir}`);
  const text = await page.$eval("section[aria-labelledby='h-freeze']", (s) => s.textContent);
  check(text.includes("۱۴۰۴/۰۱/۰۱"), `2025-03-21 as ۱۴۰۴/۰۱/۰۱ in: ${text}`);
  await shot("firefox-rollouts-fa");
  // The Persian font is the embedded one, loaded from the controller.
  const loaded = await page.evaluate(async () => {
    await document.fonts.ready;
    return [...document.fonts].filter((f) => f.family.includes("Vazirmatn") && f.status === "loaded").length;
  });
  check(loaded > 0, "Vazirmatn not loaded");
  await page.goto(`${base}/ui/devices/${cfg.device}`);
  await shot("firefox-device-fa");
  await Promise.all([page.waitForNavigation(), page.click("form[action='/ui/lang'] button")]);
  check((await lang())[0] === "en", "back to English");
});

await browser.close();
