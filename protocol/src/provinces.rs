//! The 31 provinces (ostan) of Iran with their ISO 3166-2:IR codes, built in
//! so that no deployment depends on an imported file for them. Counties and
//! polling stations, which change between elections, come from the operator's
//! registry import instead.

/// One province. `population_k` is the 2016 census population in thousands;
/// it is used as a weight (the simulator spreads devices in proportion to it)
/// and never as an authoritative figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Province {
    pub code: &'static str,
    pub name_en: &'static str,
    pub name_fa: &'static str,
    pub population_k: u32,
}

const fn p(
    code: &'static str,
    name_en: &'static str,
    name_fa: &'static str,
    population_k: u32,
) -> Province {
    Province {
        code,
        name_en,
        name_fa,
        population_k,
    }
}

/// Indexed by the number in the code: `PROVINCES[23]` is `IR-23`, Tehran.
pub const PROVINCES: [Province; 31] = [
    p("IR-00", "Markazi", "مرکزی", 1429),
    p("IR-01", "Gilan", "گیلان", 2530),
    p("IR-02", "Mazandaran", "مازندران", 3283),
    p("IR-03", "East Azerbaijan", "آذربایجان شرقی", 3909),
    p("IR-04", "West Azerbaijan", "آذربایجان غربی", 3265),
    p("IR-05", "Kermanshah", "کرمانشاه", 1952),
    p("IR-06", "Khuzestan", "خوزستان", 4710),
    p("IR-07", "Fars", "فارس", 4851),
    p("IR-08", "Kerman", "کرمان", 3164),
    p("IR-09", "Razavi Khorasan", "خراسان رضوی", 6434),
    p("IR-10", "Isfahan", "اصفهان", 5120),
    p("IR-11", "Sistan and Baluchestan", "سیستان و بلوچستان", 2775),
    p("IR-12", "Kurdistan", "کردستان", 1603),
    p("IR-13", "Hamadan", "همدان", 1738),
    p(
        "IR-14",
        "Chaharmahal and Bakhtiari",
        "چهارمحال و بختیاری",
        947,
    ),
    p("IR-15", "Lorestan", "لرستان", 1760),
    p("IR-16", "Ilam", "ایلام", 580),
    p(
        "IR-17",
        "Kohgiluyeh and Boyer-Ahmad",
        "کهگیلویه و بویراحمد",
        713,
    ),
    p("IR-18", "Bushehr", "بوشهر", 1163),
    p("IR-19", "Zanjan", "زنجان", 1057),
    p("IR-20", "Semnan", "سمنان", 702),
    p("IR-21", "Yazd", "یزد", 1138),
    p("IR-22", "Hormozgan", "هرمزگان", 1776),
    p("IR-23", "Tehran", "تهران", 13268),
    p("IR-24", "Ardabil", "اردبیل", 1270),
    p("IR-25", "Qom", "قم", 1292),
    p("IR-26", "Qazvin", "قزوین", 1273),
    p("IR-27", "Golestan", "گلستان", 1868),
    p("IR-28", "North Khorasan", "خراسان شمالی", 863),
    p("IR-29", "South Khorasan", "خراسان جنوبی", 768),
    p("IR-30", "Alborz", "البرز", 2712),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProvinceCode;

    #[test]
    fn table_is_indexed_by_code_number() {
        for (i, prov) in PROVINCES.iter().enumerate() {
            assert_eq!(prov.code, format!("IR-{i:02}"));
            let code = ProvinceCode::parse(prov.code).unwrap();
            assert_eq!(code.info(), prov);
        }
    }

    #[test]
    fn tehran_is_largest() {
        let max = PROVINCES.iter().max_by_key(|p| p.population_k).unwrap();
        assert_eq!(max.name_en, "Tehran");
    }
}
