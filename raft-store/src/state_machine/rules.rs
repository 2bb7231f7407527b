//! Applying the rule engine's commands. A rule is one record by id; the name is a label, not
//! a key (two rules may share it). Each change is announced as `Applied::Rule`, so every node
//! recompiles that rule from the registry.

use super::apply::{not_found, rejected};
use super::tx::{IoResult, Tx};
use crate::applied::Applied;
use crate::command::{CommandResult, Rejection};
use crate::keys;
use crate::model::{Rule, RulePatch};

pub(super) fn create_rule(tx: &mut Tx<'_>, mut rule: Rule) -> IoResult<CommandResult> {
    if rule.name.is_empty() {
        return rejected(Rejection::Invalid {
            message: "a rule needs a name".into(),
        });
    }
    rule.id = tx.next_id(keys::NEXT_RULE_ID)?;
    tx.put_value(keys::RULES, &keys::id(rule.id), &rule);
    tx.effect(Applied::Rule { id: rule.id });
    Ok(CommandResult::Created { id: rule.id })
}

pub(super) fn update_rule(tx: &mut Tx<'_>, id: u64, patch: RulePatch) -> IoResult<CommandResult> {
    let Some(mut rule) = tx.get_value::<Rule>(keys::RULES, &keys::id(id))? else {
        return not_found("rule");
    };
    if let Some(name) = patch.name {
        rule.name = name;
    }
    if let Some(sql) = patch.sql {
        rule.sql = sql;
    }
    if let Some(actions) = patch.actions {
        rule.actions = actions;
    }
    if let Some(description) = patch.description {
        rule.description = description;
    }
    if let Some(enable) = patch.enable {
        rule.enable = enable;
    }
    rule.updated_at = patch.updated_at;
    tx.put_value(keys::RULES, &keys::id(id), &rule);
    tx.effect(Applied::Rule { id });
    Ok(CommandResult::Ok)
}

pub(super) fn delete_rule(tx: &mut Tx<'_>, id: u64) -> IoResult<CommandResult> {
    if !tx.exists(keys::RULES, &keys::id(id))? {
        return not_found("rule");
    }
    tx.delete(keys::RULES, &keys::id(id));
    tx.effect(Applied::Rule { id });
    Ok(CommandResult::Ok)
}
