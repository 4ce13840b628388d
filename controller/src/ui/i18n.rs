//! The console's two languages (pure): every word a page shows, in English
//! and Persian; numbers in Latin or Persian digits; dates in the Gregorian
//! or the Jalali calendar (ICU4X through `fleet_api::dates`), always at
//! Tehran's +03:30.

use fleet_api::dates::{Both, TEHRAN_OFFSET_MIN};
use fleet_api::types::{Lifecycle, Readiness, Reason};
use fleet_protocol::ProvinceCode;

/// The language of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Fa,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fa => "fa",
        }
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "en" => Some(Lang::En),
            "fa" => Some(Lang::Fa),
            _ => None,
        }
    }

    /// The other one (the switch on every page offers it).
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Fa,
            Lang::Fa => Lang::En,
        }
    }

    pub fn dir(self) -> &'static str {
        match self {
            Lang::En => "ltr",
            Lang::Fa => "rtl",
        }
    }

    /// The language's own name, as the switch shows it.
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Fa => "فارسی",
        }
    }

    /// A language the browser prefers (`Accept-Language`), for the sign-in
    /// page before anyone is known.
    pub fn from_accept(header: &str) -> Lang {
        let first = header.split(',').next().unwrap_or("").trim();
        if first.starts_with("fa") {
            Lang::Fa
        } else {
            Lang::En
        }
    }

    pub fn t(self, m: Msg) -> &'static str {
        m.text(self)
    }

    /// Digits in this language's script (the rest unchanged).
    pub fn digits(self, s: &str) -> String {
        match self {
            Lang::En => s.to_owned(),
            Lang::Fa => s
                .chars()
                .map(|c| match c {
                    '0'..='9' => {
                        char::from_u32(u32::from(c) - u32::from('0') + 0x06F0).unwrap_or(c)
                    }
                    '.' => '\u{066B}',
                    ',' => '\u{066C}',
                    '%' => '\u{066A}',
                    _ => c,
                })
                .collect(),
        }
    }

    /// `25,000` or `۲۵٬۰۰۰`.
    pub fn count(self, n: u64) -> String {
        let plain = n.to_string();
        let mut grouped = String::with_capacity(plain.len() + plain.len() / 3);
        for (i, c) in plain.chars().enumerate() {
            if i > 0 && (plain.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        self.digits(&grouped)
    }

    /// `ready` of `total` as a percentage with one decimal (`–` of none).
    pub fn percent(self, ready: u64, total: u64) -> String {
        if total == 0 {
            return "–".to_owned();
        }
        let tenths = (ready * 1000 + total / 2) / total;
        self.digits(&format!("{}.{}%", tenths / 10, tenths % 10))
    }

    /// A day: `2025-03-21` or `۱۴۰۴/۰۱/۰۱`, at Tehran's offset.
    pub fn date(self, ms: u64) -> String {
        match Both::at(ms, TEHRAN_OFFSET_MIN) {
            None => self.digits(&ms.to_string()),
            Some(b) => match self {
                Lang::En => {
                    let (y, m, d) = b.gregorian;
                    format!("{y}-{m:02}-{d:02}")
                }
                Lang::Fa => {
                    let (y, m, d) = b.jalali;
                    self.digits(&format!("{y}/{m:02}/{d:02}"))
                }
            },
        }
    }

    /// A moment: the day and `HH:MM`, at Tehran's offset.
    pub fn datetime(self, ms: u64) -> String {
        match Both::at(ms, TEHRAN_OFFSET_MIN) {
            None => self.digits(&ms.to_string()),
            Some(b) => format!(
                "{} {}",
                self.date(ms),
                self.digits(&format!("{:02}:{:02}", b.hour, b.minute))
            ),
        }
    }

    /// The day in both calendars, this language's first (the report's
    /// header): `2025-03-21 (1404/01/01)` or `۱۴۰۴/۰۱/۰۱ (۲۰۲۵-۰۳-۲۱)`.
    pub fn both_dates(self, ms: u64) -> String {
        match Both::at(ms, TEHRAN_OFFSET_MIN) {
            None => self.digits(&ms.to_string()),
            Some(b) => {
                let (jy, jm, jd) = b.jalali;
                let (gy, gm, gd) = b.gregorian;
                let jalali = format!("{jy}/{jm:02}/{jd:02}");
                let gregorian = format!("{gy}-{gm:02}-{gd:02}");
                match self {
                    Lang::En => format!("{gregorian} ({jalali})"),
                    Lang::Fa => self.digits(&format!("{jalali} ({gregorian})")),
                }
            }
        }
    }

    /// How long ago, roughly: `3 min ago`, `۲ ساعت پیش`.
    pub fn ago(self, ms: u64, now_ms: u64) -> String {
        let s = now_ms.saturating_sub(ms) / 1000;
        let (n, unit) = match s {
            0..60 => (s, Msg::Seconds),
            60..3600 => (s / 60, Msg::Minutes),
            3600..86_400 => (s / 3600, Msg::Hours),
            _ => (s / 86_400, Msg::Days),
        };
        format!("{} {} {}", self.count(n), self.t(unit), self.t(Msg::Ago))
    }

    /// A province's name in this language.
    pub fn province(self, p: ProvinceCode) -> &'static str {
        match self {
            Lang::En => p.info().name_en,
            Lang::Fa => p.info().name_fa,
        }
    }

    pub fn reason(self, r: Reason) -> &'static str {
        self.t(match r {
            Reason::NotEnrolled => Msg::NotEnrolled,
            Reason::NeverSeen => Msg::NeverSeen,
            Reason::LinkDown => Msg::LinkDown,
            Reason::Offline => Msg::Offline,
            Reason::UpdateFailed => Msg::UpdateFailed,
            Reason::Updating => Msg::Updating,
            Reason::Outdated => Msg::Outdated,
            Reason::Unhealthy => Msg::Unhealthy,
        })
    }

    pub fn readiness(self, r: Readiness) -> &'static str {
        r.reason().map_or(self.t(Msg::Ready), |r| self.reason(r))
    }

    pub fn lifecycle(self, l: Lifecycle) -> &'static str {
        self.t(match l {
            Lifecycle::Registered => Msg::Registered,
            Lifecycle::Enrolled => Msg::Enrolled,
            Lifecycle::Shipped => Msg::Shipped,
            Lifecycle::Deployed => Msg::Deployed,
            Lifecycle::Retired => Msg::Retired,
        })
    }
}

/// Every message, with its English and Persian text: a message missing in
/// one language does not compile.
macro_rules! messages {
    ($($name:ident => $en:literal, $fa:literal;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Msg { $($name),* }

        impl Msg {
            pub const ALL: &'static [Msg] = &[$(Msg::$name),*];

            pub fn text(self, lang: Lang) -> &'static str {
                match (self, lang) {
                    $((Msg::$name, Lang::En) => $en, (Msg::$name, Lang::Fa) => $fa,)*
                }
            }
        }
    };
}

messages! {
    Sandogh => "Sandogh", "صندوق";
    Console => "Sandogh console", "پیشخوان صندوق";
    SignIn => "Sign in", "ورود";
    SignOut => "Sign out", "خروج";
    Token => "Operator token", "توکن اپراتور";
    TokenHelp => "The token fleetctl uses (sdg_…). It stays on this server; the browser keeps only a session cookie.", "همان توکنی که fleetctl به کار می‌برد (sdg_…). توکن روی همین سرور می‌ماند و مرورگر فقط کوکی نشست را نگه می‌دارد.";
    BadToken => "This token was refused: it is unknown, revoked or expired.", "این توکن پذیرفته نشد: ناشناخته، باطل‌شده یا منقضی است.";
    SessionEnded => "Your session ended. Sign in again.", "نشست شما تمام شد. دوباره وارد شوید.";
    SignedOut => "You are signed out.", "از سامانه خارج شدید.";
    Language => "Language", "زبان";
    SignedInAs => "Signed in as", "کاربر";
    Role => "Role", "نقش";
    Scope => "Scope", "محدوده";
    AllProvinces => "all provinces", "همهٔ استان‌ها";
    Readiness => "Readiness", "آمادگی";
    National => "National readiness", "آمادگی کشوری";
    Devices => "Devices", "دستگاه‌ها";
    Device => "Device", "دستگاه";
    Rollouts => "Rollouts", "به‌روزرسانی‌ها";
    Bench => "Warehouse bench", "میز انبار";
    Audit => "Audit log", "گزارش ممیزی";
    Report => "Readiness report", "گزارش آمادگی";
    Province => "Province", "استان";
    County => "County", "شهرستان";
    Station => "Polling station", "شعبه";
    NoCounty => "(no county)", "(بدون شهرستان)";
    NoStation => "(no station)", "(بدون شعبه)";
    Total => "Devices", "دستگاه";
    ReadyCount => "Ready", "آماده";
    ReadyPct => "Ready %", "درصد آمادگی";
    NotReady => "Not ready", "ناآماده";
    Link => "Link", "پیوند";
    LinkUp => "up", "برقرار";
    LinkDownSince => "down since", "قطع از";
    Central => "central broker", "کارگزار مرکزی";
    Trend => "Last days", "روزهای اخیر";
    SortBy => "Sort by", "مرتب‌سازی";
    Worst => "worst first", "بدترین اول";
    ByName => "name", "نام";
    ByCode => "code", "کد";
    Ready => "ready", "آماده";
    NotEnrolled => "not enrolled", "ثبت‌نام‌نشده";
    NeverSeen => "never seen", "هرگز دیده‌نشده";
    LinkDown => "link down", "پیوند قطع";
    Offline => "offline", "خاموش";
    UpdateFailed => "update failed", "به‌روزرسانی ناموفق";
    Updating => "updating", "در حال به‌روزرسانی";
    Outdated => "outdated", "قدیمی";
    Unhealthy => "unhealthy", "ناسالم";
    Registered => "registered", "ثبت‌شده";
    Enrolled => "enrolled", "ثبت‌نام‌شده";
    Shipped => "shipped", "ارسال‌شده";
    Deployed => "deployed", "مستقرشده";
    Retired => "retired", "بازنشسته";
    Online => "online", "برخط";
    Model => "Model", "مدل";
    Lifecycle => "Lifecycle", "چرخهٔ عمر";
    Presence => "Presence", "حضور";
    Firmware => "Firmware", "سفت‌افزار";
    Agent => "Agent", "عامل";
    LastSeen => "Last seen", "آخرین دیدار";
    Never => "never", "هرگز";
    Filter => "Filter", "پالایش";
    Any => "any", "همه";
    Previous => "Previous", "قبلی";
    Next => "Next", "بعدی";
    PageOf => "page", "صفحه";
    Of => "of", "از";
    Registration => "Registration", "ثبت";
    Checks => "Checks", "بررسی‌ها";
    Health => "Health", "سلامت";
    Events => "Recent events", "رویدادهای اخیر";
    UpdateHistory => "Update", "به‌روزرسانی";
    Commands => "Commands", "فرمان‌ها";
    Actions => "Actions", "اقدام‌ها";
    RunChecks => "Run checks", "اجرای بررسی‌ها";
    Reboot => "Reboot", "راه‌اندازی دوباره";
    Ship => "Ship", "ارسال";
    Deploy => "Deploy", "استقرار";
    Retire => "Retire", "بازنشسته کردن";
    Confirm => "Are you sure?", "مطمئن هستید؟";
    ConfirmDevice => "This is sent to the device and written to the audit log.", "این به دستگاه فرستاده و در گزارش ممیزی ثبت می‌شود.";
    Yes => "Yes, do it", "بله، انجام شود";
    Cancel => "Cancel", "انصراف";
    Done => "Done", "انجام شد";
    Refused => "Refused", "رد شد";
    Sent => "sent", "فرستاده‌شده";
    Expires => "expires", "انقضا";
    State => "State", "وضعیت";
    Result => "Result", "نتیجه";
    When => "When", "زمان";
    Kind => "Kind", "نوع";
    Detail => "Detail", "جزئیات";
    Nothing => "Nothing yet.", "هنوز چیزی نیست.";
    Cpu => "CPU", "پردازنده";
    Memory => "Memory", "حافظه";
    Disk => "Disk", "دیسک";
    Battery => "Battery", "باتری";
    Temperature => "Temperature", "دما";
    Uptime => "Uptime", "مدت روشن بودن";
    Desired => "Desired", "مطلوب";
    Live => "live", "زنده";
    Updated => "updated", "به‌روز شده";
    NotFound => "Not found", "پیدا نشد";
    Forbidden => "Not allowed", "مجاز نیست";
    Seconds => "s", "ثانیه";
    Minutes => "min", "دقیقه";
    Hours => "h", "ساعت";
    Days => "d", "روز";
    Ago => "ago", "پیش";
    Home => "Home", "خانه";
    Skip => "Skip to content", "رفتن به محتوا";
    OnElectionFirmware => "on the election firmware", "روی سفت‌افزار انتخابات";
    DevicesWord => "devices", "دستگاه";
    FirstVisit => "first visit", "نخستین بازدید";
    PhaseDraft => "draft", "پیش‌نویس";
    PhaseRunning => "running", "در حال اجرا";
    PhasePaused => "paused", "متوقف";
    PhaseCompleted => "completed", "تمام‌شده";
    PhaseAborted => "aborted", "لغوشده";
    Pending => "pending", "در انتظار";
    Downloading => "downloading", "در حال دریافت";
    Installing => "installing", "در حال نصب";
    Rebooting => "rebooting", "در حال راه‌اندازی";
    Succeeded => "succeeded", "موفق";
    FailedCount => "failed", "ناموفق";
    TimedOut => "timed out", "بی‌پاسخ";
    Skipped => "skipped", "ردشده";
    Name => "Name", "نام";
    Progress => "Progress", "پیشرفت";
    Target => "Target", "هدف";
    Wave => "Wave", "موج";
    Waves => "Waves", "موج‌ها";
    ByProvince => "By province", "به تفکیک استان";
    Created => "Created", "ایجاد";
    Log => "Log", "رویدادنامه";
    Policy => "Failure / success thresholds", "آستانهٔ شکست / موفقیت";
    MaxDownloads => "max downloads per province", "بیشینهٔ دریافت هم‌زمان در هر استان";
    Start => "Start", "آغاز";
    Pause => "Pause", "توقف";
    Resume => "Resume", "ادامه";
    Abort => "Abort", "لغو";
    RetryFailed => "Retry failed", "تلاش دوباره برای ناموفق‌ها";
    ConfirmRollout => "The rollout's devices are told at once, and this is written to the audit log.", "دستگاه‌های این به‌روزرسانی بی‌درنگ باخبر می‌شوند و این در گزارش ممیزی ثبت می‌شود.";
    FreezeWindows => "Freeze windows", "بازه‌های توقف";
    FreezeHelp => "Inside a window no rollout starts or advances and no device installs anything.", "در این بازه‌ها هیچ به‌روزرسانی آغاز نمی‌شود یا پیش نمی‌رود و هیچ دستگاهی چیزی نصب نمی‌کند.";
    From => "From", "از";
    To => "To", "تا";
    Reason => "Reason", "دلیل";
    ActiveNow => "in force now", "هم‌اکنون برقرار";
    AddFreeze => "Add window", "افزودن بازه";
    ClearFreeze => "Clear every window", "پاک کردن همهٔ بازه‌ها";
    DateHelp => "Dates in the Jalali calendar (1403-12-01) or Gregorian (2025-02-19), at Tehran time; a time may follow (1403-12-01 08:00).", "تاریخ به تقویم جلالی (1403-12-01) یا میلادی (2025-02-19)، به وقت تهران؛ می‌توان ساعت را هم افزود (1403-12-01 08:00).";
    Shipments => "Recent shipments", "محموله‌های اخیر";
    Shipment => "Shipment", "محموله";
    EnrolledCount => "Enrolled", "ثبت‌نام‌شده";
    NewShipment => "New shipment", "محمولهٔ تازه";
    NewShipmentHelp => "One device a line: serial, model, province, and optionally county and station. The sheet with each device's QR code is shown once, right after: print it then.", "هر خط یک دستگاه: شماره سریال، مدل، استان و در صورت نیاز شهرستان و شعبه. برگهٔ کدهای QR تنها یک بار، بلافاصله پس از ثبت، نمایش داده می‌شود: همان زمان چاپش کنید.";
    ShipmentCsv => "Shipment (CSV)", "محموله (CSV)";
    RegisterAndPrint => "Register and show the sheet", "ثبت و نمایش برگه";
    Sheet => "Enrolment sheet", "برگهٔ ثبت‌نام";
    SheetOnce => "This is the only time these tokens are shown: print this page now (Ctrl+P).", "این توکن‌ها تنها همین یک بار نمایش داده می‌شوند: همین حالا این صفحه را چاپ کنید (Ctrl+P).";
    WatchBench => "Watch the bench", "پیگیری روی میز";
    Line => "line", "خط";
    SelfTest => "Self-test passed", "خودآزمایی موفق";
    ReadyToShip => "Ready to ship", "آمادهٔ ارسال";
    EnrolledAt => "Enrolled at", "زمان ثبت‌نام";
    Passed => "passed", "موفق";
    NotYet => "not yet", "هنوز نه";
    ChainIntact => "The audit chain is intact", "زنجیرهٔ ممیزی سالم است";
    ChainBroken => "The audit chain is broken at", "زنجیرهٔ ممیزی شکسته است در";
    Entries => "entries", "مورد";
    Head => "head", "سر زنجیره";
    Actor => "Actor", "کنشگر";
    Action => "Action", "اقدام";
    TargetOf => "Target", "موضوع";
    Source => "Source", "مبدأ";
    Print => "Print", "چاپ";
    ConsoleFull => "The console has as many sessions open as it allows. Try again later.", "پیشخوان به سقف نشست‌های هم‌زمان رسیده است. کمی بعد دوباره تلاش کنید.";
    OtherProvinces => "other provinces", "استان‌های دیگر";
    Canary => "canary", "پیش‌آهنگ";
    Rest => "the rest", "بقیه";
    NewSheet => "Print a sheet for the devices not enrolled yet", "چاپ برگه برای دستگاه‌هایی که هنوز ثبت‌نام نشده‌اند";
    NewSheetHelp => "new tokens in a new shipment; the old ones work until they expire", "توکن‌های تازه در محموله‌ای تازه؛ توکن‌های پیشین تا انقضا معتبرند";
    UpdateResults => "Earlier results (recent events)", "نتیجه‌های پیشین (رویدادهای اخیر)";
    Free => "free", "آزاد";
    Megabytes => "MB", "مگابایت";
    CommandOk => "ok", "انجام شد";
    Expired => "expired", "منقضی";
    NotReadyDevices => "Devices that are not ready", "دستگاه‌های ناآماده";
    AllReady => "Every device is ready.", "همهٔ دستگاه‌ها آماده‌اند.";
    MoreInList => "more: see the device list", "دیگر: فهرست دستگاه‌ها را ببینید";
    NewestOnly => "the newest only; narrow the filter", "تنها تازه‌ترین‌ها؛ پالایش را دقیق‌تر کنید";
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_api::dates::parse;

    fn utc_noon(day: &str) -> u64 {
        parse(day, 0).unwrap() + 12 * 3_600_000
    }

    #[test]
    fn nowruz_1404_is_shown_in_persian_as_1404_01_01() {
        let ms = utc_noon("2025-03-21");
        assert_eq!(Lang::Fa.date(ms), "۱۴۰۴/۰۱/۰۱");
        assert_eq!(Lang::En.date(ms), "2025-03-21");
    }

    #[test]
    fn the_30th_of_esfand_1403_is_shown() {
        // The day a 2820-year-cycle implementation first gets wrong.
        let ms = utc_noon("2025-03-20");
        assert_eq!(Lang::Fa.date(ms), "۱۴۰۳/۱۲/۳۰");
        assert_eq!(Lang::En.both_dates(ms), "2025-03-20 (1403/12/30)");
        assert_eq!(Lang::Fa.both_dates(ms), "۱۴۰۳/۱۲/۳۰ (۲۰۲۵-۰۳-۲۰)");
    }

    #[test]
    fn dates_are_at_tehran_time() {
        // 21:00 UTC on the 20th is 00:30 on the 21st in Tehran.
        let ms = parse("2025-03-20T21:00:00Z", 0).unwrap();
        assert_eq!(Lang::En.datetime(ms), "2025-03-21 00:30");
        assert_eq!(Lang::Fa.datetime(ms), "۱۴۰۴/۰۱/۰۱ ۰۰:۳۰");
    }

    #[test]
    fn counts_are_grouped_and_written_in_the_language_digits() {
        assert_eq!(Lang::En.count(0), "0");
        assert_eq!(Lang::En.count(999), "999");
        assert_eq!(Lang::En.count(25_000), "25,000");
        assert_eq!(Lang::En.count(1_234_567), "1,234,567");
        assert_eq!(Lang::Fa.count(25_000), "۲۵٬۰۰۰");
    }

    #[test]
    fn percentages_round_to_a_tenth_and_none_of_nothing() {
        assert_eq!(Lang::En.percent(1, 3), "33.3%");
        assert_eq!(Lang::En.percent(2, 3), "66.7%");
        assert_eq!(Lang::En.percent(3, 3), "100.0%");
        assert_eq!(Lang::Fa.percent(1, 2), "۵۰٫۰٪");
        assert_eq!(Lang::En.percent(0, 0), "–");
    }

    #[test]
    fn every_message_has_text_in_both_languages_and_persian_is_not_english() {
        for m in Msg::ALL {
            assert!(!m.text(Lang::En).is_empty(), "{m:?} in English");
            assert!(!m.text(Lang::Fa).is_empty(), "{m:?} in Persian");
        }
        let same: Vec<_> = Msg::ALL
            .iter()
            .filter(|m| m.text(Lang::En) == m.text(Lang::Fa))
            .collect();
        assert!(same.is_empty(), "not translated: {same:?}");
    }

    #[test]
    fn the_browser_language_picks_the_sign_in_page_language() {
        assert_eq!(Lang::from_accept("fa-IR,fa;q=0.9,en;q=0.8"), Lang::Fa);
        assert_eq!(Lang::from_accept("en-US,en;q=0.9"), Lang::En);
        assert_eq!(Lang::from_accept(""), Lang::En);
    }

    #[test]
    fn ago_uses_the_largest_whole_unit() {
        assert_eq!(Lang::En.ago(0, 30_000), "30 s ago");
        assert_eq!(Lang::En.ago(0, 3 * 60_000 + 5), "3 min ago");
        assert_eq!(Lang::Fa.ago(0, 2 * 3_600_000), "۲ ساعت پیش");
        assert_eq!(Lang::En.ago(5_000, 0), "0 s ago");
    }
}
