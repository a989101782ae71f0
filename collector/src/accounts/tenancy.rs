//! Who sees which account: an operator every account, a partner its own and its sub-accounts, a
//! customer its own. The API answers any other account as one that does not exist; the console
//! lists only these; recipients and orders add their own rule of who may change what on top.

use crate::store::{Account, Role};

/// Whether a caller of `role` holding account `own` (`None` for operators) may see `account`.
pub fn may_see(role: Role, own: Option<&str>, account: &Account) -> bool {
    match role {
        Role::Operator => true,
        Role::Customer => own == Some(account.id.as_str()),
        Role::Partner => own.is_some() && (own == Some(account.id.as_str()) || account.partner.as_deref() == own),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_see_every_account_partners_their_own_and_their_subaccounts_customers_their_own() {
        let account = |id: &str, partner: Option<&str>| Account {
            id: id.into(),
            name: id.into(),
            partner: partner.map(Into::into),
            eop_contact_name: None,
            eop_contact_email: None,
        };
        let (sub, reseller, other) = (account("sub", Some("reseller")), account("reseller", None), account("x", None));
        assert!([&sub, &reseller, &other].iter().all(|a| may_see(Role::Operator, None, a)));
        assert!(may_see(Role::Partner, Some("reseller"), &sub) && may_see(Role::Partner, Some("reseller"), &reseller));
        assert!(!may_see(Role::Partner, Some("reseller"), &other));
        assert!(!may_see(Role::Partner, None, &account("y", None)), "a partner token without an account sees none");
        assert!(may_see(Role::Customer, Some("sub"), &sub));
        assert!(!may_see(Role::Customer, Some("sub"), &reseller), "a sub-account does not see its partner");
        assert!(!may_see(Role::Customer, Some("reseller"), &sub), "a customer token does not see sub-accounts");
    }
}
