// A browser's User-Agent in a few words ("Chrome on macOS"), for the list of signed-in
// devices. Only for people to recognise their own devices: nothing depends on it.

const BROWSERS = [
  [/\bEdgA?\//, "Edge"],
  [/\bOPR\//, "Opera"],
  [/\bSamsungBrowser\//, "Samsung Internet"],
  [/\bFirefox\/|\bFxiOS\//, "Firefox"],
  [/\bCriOS\/|\bChrome\/|\bHeadlessChrome\/|\bChromium\//, "Chrome"],
  [/\bVersion\/[\d.]+.*\bSafari\//, "Safari"],
];

const SYSTEMS = [
  [/\biPhone\b/, "iPhone"],
  [/\biPad\b/, "iPad"],
  [/\bAndroid\b/, "Android"],
  [/\bWindows\b/, "Windows"],
  [/\bCrOS\b/, "ChromeOS"],
  [/\bMac OS X\b|\bMacintosh\b/, "macOS"],
  [/\bLinux\b/, "Linux"],
];

/** "Chrome on Linux", "Safari on iPhone", "curl", or "An unknown device". */
export function describeAgent(userAgent) {
  const ua = typeof userAgent === "string" ? userAgent.trim() : "";
  if (!ua) return "An unknown device";
  const browser = BROWSERS.find(([re]) => re.test(ua))?.[1];
  const system = SYSTEMS.find(([re]) => re.test(ua))?.[1];
  if (browser && system) return `${browser} on ${system}`;
  if (browser || system) return browser || system;
  // Not a browser (a script, a command-line tool): its first product name.
  const product = ua.match(/^[A-Za-z][\w.-]{0,40}/)?.[0];
  return product || "An unknown device";
}
