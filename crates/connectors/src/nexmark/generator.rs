//! The Nexmark event generator: persons, auctions and bids in the
//! 1 : 3 : 46 proportion, with the id, price, channel and timestamp rules
//! of the reference generator (Apache Beam's / Flink's Nexmark): event `n`
//! of every block of 50 is a person when `n % 50 == 0`, an auction when it
//! is 1..=3, else a bid; ids count from 1000; bids go mostly to recent
//! ("hot") auctions and come mostly from recent bidders; prices are
//! log-uniform between $1 and $10,000 (in cents); event time advances by
//! `1 / rate` seconds per event from a fixed base. Every field of event `n`
//! comes from a random stream seeded by `(seed, n)`, so each of the three
//! streams can be generated on its own and they still agree.

pub const PERSON_PROPORTION: u64 = 1;
pub const AUCTION_PROPORTION: u64 = 3;
pub const TOTAL_PROPORTION: u64 = 50;
pub const FIRST_PERSON_ID: u64 = 1000;
pub const FIRST_AUCTION_ID: u64 = 1000;
pub const FIRST_CATEGORY_ID: u64 = 10;
const NUM_CATEGORIES: u64 = 5;
const IN_FLIGHT_AUCTIONS: u64 = 100;
const ACTIVE_PEOPLE: u64 = 1000;
const AUCTION_ID_LEAD: u64 = 10;
const PERSON_ID_LEAD: u64 = 10;
const HOT_AUCTION_RATIO: u64 = 100;
const HOT_SELLER_RATIO: u64 = 100;
const HOT_BIDDER_RATIO: u64 = 100;
/// 2015-07-15T00:00:00Z, the reference generator's base time.
pub const BASE_TIME_MS: i64 = 1_436_918_400_000;

const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const HOT_URLS: [&str; 4] = [
    "https://www.nexmark.com/googl/item.htm?query=1",
    "https://www.nexmark.com/faceb/item.htm?query=1",
    "https://www.nexmark.com/baidu/item.htm?query=1",
    "https://www.nexmark.com/apple/item.htm?query=1",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// What event `n` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Person,
    Auction,
    Bid,
}

impl Kind {
    pub fn of(event: u64) -> Self {
        match event % TOTAL_PROPORTION {
            o if o < PERSON_PROPORTION => Kind::Person,
            o if o < PERSON_PROPORTION + AUCTION_PROPORTION => Kind::Auction,
            _ => Kind::Bid,
        }
    }
}

pub struct Person {
    pub id: i64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: &'static str,
    pub state: &'static str,
    pub date_time: i64,
}

pub struct Auction {
    pub id: i64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: i64,
    pub reserve: i64,
    pub date_time: i64,
    pub expires: i64,
    pub seller: i64,
    pub category: i64,
}

pub struct Bid {
    pub auction: i64,
    pub bidder: i64,
    pub price: i64,
    pub channel: String,
    pub url: String,
    pub date_time: i64,
}

/// Generates the events of one configuration.
#[derive(Debug, Clone, Copy)]
pub struct Generator {
    pub seed: u64,
    /// Event-time rate: events per second of event time.
    pub rate: u64,
}

impl Generator {
    /// Event time of event `n`, in milliseconds.
    pub fn timestamp(&self, event: u64) -> i64 {
        BASE_TIME_MS + (event as u128 * 1000 / self.rate.max(1) as u128) as i64
    }

    fn rng(&self, event: u64) -> Rng {
        Rng(self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(event.wrapping_mul(0xD1B5_4A32_D192_ED03))
            | 1)
    }

    pub fn person(&self, event: u64) -> Person {
        let mut r = self.rng(event);
        Person {
            id: (last_person(event) + FIRST_PERSON_ID) as i64,
            name: format!(
                "{} {}",
                FIRST_NAMES[r.below(FIRST_NAMES.len() as u64) as usize],
                LAST_NAMES[r.below(LAST_NAMES.len() as u64) as usize]
            ),
            email_address: format!("{}@{}.com", r.word(7), r.word(5)),
            credit_card: format!(
                "{:04} {:04} {:04} {:04}",
                r.below(10_000),
                r.below(10_000),
                r.below(10_000),
                r.below(10_000)
            ),
            city: US_CITIES[r.below(US_CITIES.len() as u64) as usize],
            state: US_STATES[r.below(US_STATES.len() as u64) as usize],
            date_time: self.timestamp(event),
        }
    }

    pub fn auction(&self, event: u64) -> Auction {
        let mut r = self.rng(event);
        let seller = if r.below(4) > 0 {
            // a hot seller
            (last_person(event) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        } else {
            next_person(event, &mut r)
        };
        let initial_bid = r.price();
        let date_time = self.timestamp(event);
        // auctions last up to about twice the time in which the in-flight
        // auctions are created
        let horizon_events = IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let horizon_ms = (self.timestamp(horizon_events) - BASE_TIME_MS).max(1) as u64;
        Auction {
            id: (last_auction(event) + FIRST_AUCTION_ID) as i64,
            item_name: r.word(20),
            description: r.word(100),
            initial_bid,
            reserve: initial_bid + r.price(),
            date_time,
            expires: date_time + 1 + r.below(2 * horizon_ms) as i64,
            seller: (seller + FIRST_PERSON_ID) as i64,
            category: (FIRST_CATEGORY_ID + r.below(NUM_CATEGORIES)) as i64,
        }
    }

    pub fn bid(&self, event: u64) -> Bid {
        let mut r = self.rng(event);
        let auction = if r.below(2) > 0 {
            // a hot auction
            (last_auction(event) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        } else {
            next_auction(event, &mut r)
        };
        let bidder = if r.below(4) > 0 {
            // a hot bidder
            (last_person(event) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
        } else {
            next_person(event, &mut r)
        };
        let price = r.price();
        let (channel, url) = if r.below(2) > 0 {
            let i = r.below(HOT_CHANNELS.len() as u64) as usize;
            (HOT_CHANNELS[i].to_string(), HOT_URLS[i].to_string())
        } else {
            let c = r.below(10_000);
            (
                format!("channel-{c}"),
                format!(
                    "https://www.nexmark.com/{}/{}/{}/item.htm?query=1&channel_id={c}",
                    r.word(5),
                    r.word(5),
                    r.word(5)
                ),
            )
        };
        Bid {
            auction: (auction + FIRST_AUCTION_ID) as i64,
            bidder: (bidder + FIRST_PERSON_ID) as i64,
            price,
            channel,
            url,
            date_time: self.timestamp(event),
        }
    }
}

/// The (0-based) id of the last person created at or before event `n`.
fn last_person(event: u64) -> u64 {
    let epoch = event / TOTAL_PROPORTION;
    // past this block's persons, the block's last person is the latest
    let offset = match event % TOTAL_PROPORTION {
        o if o < PERSON_PROPORTION => o,
        _ => PERSON_PROPORTION - 1,
    };
    epoch * PERSON_PROPORTION + offset
}

/// The (0-based) id of the last auction created at or before event `n`.
fn last_auction(event: u64) -> u64 {
    let mut epoch = event / TOTAL_PROPORTION;
    let mut offset = event % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        // before this block's auctions: the previous block's last one
        if epoch == 0 {
            return 0;
        }
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

/// A recent (or just upcoming) auction.
fn next_auction(event: u64, r: &mut Rng) -> u64 {
    let max = last_auction(event);
    let min = max.saturating_sub(IN_FLIGHT_AUCTIONS);
    min + r.below(max - min + 1 + AUCTION_ID_LEAD)
}

/// One of the active people (or one just about to join).
fn next_person(event: u64, r: &mut Rng) -> u64 {
    let people = last_person(event) + 1;
    let active = people.min(ACTIVE_PEOPLE);
    people - active + r.below(active + PERSON_ID_LEAD)
}

/// splitmix64: small, fast and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A price in cents, log-uniform between $1 and $1,000,000.
    fn price(&mut self) -> i64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (10f64.powf(unit * 6.0) * 100.0).round() as i64
    }

    fn word(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportions_ids_and_time() {
        let g = Generator {
            seed: 7,
            rate: 1000,
        };
        let kinds: Vec<Kind> = (0..50).map(Kind::of).collect();
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Person).count(), 1);
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Auction).count(), 3);
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Bid).count(), 46);
        assert_eq!(g.person(0).id, 1000);
        assert_eq!(g.person(50).id, 1001);
        assert_eq!(
            [
                g.auction(1).id,
                g.auction(2).id,
                g.auction(3).id,
                g.auction(51).id
            ],
            [1000, 1001, 1002, 1003]
        );
        assert_eq!(g.timestamp(1000) - g.timestamp(0), 1000);
        // deterministic for a seed, different across seeds
        assert_eq!(g.bid(777).price, g.bid(777).price);
        assert_ne!(
            (0..50).map(|n| g.bid(n + 4).price).collect::<Vec<_>>(),
            (0..50)
                .map(|n| Generator {
                    seed: 8,
                    rate: 1000
                }
                .bid(n + 4)
                .price)
                .collect::<Vec<_>>()
        );
        // bids go to auctions and from people that exist (or are just about to)
        for n in (0..5000).filter(|n| Kind::of(*n) == Kind::Bid) {
            let b = g.bid(n);
            assert!(
                b.auction >= 1000 && (b.auction as u64) <= 1000 + last_auction(n) + AUCTION_ID_LEAD
            );
            assert!(
                b.bidder >= 1000 && (b.bidder as u64) <= 1000 + last_person(n) + PERSON_ID_LEAD + 1
            );
            assert!((100..=100_000_000).contains(&b.price));
        }
    }
}
