//! The SERAM message types against every example of gpseram.yaml (copied verbatim from the
//! specification's `components/examples`), the spec's alternative spellings, and the names we
//! write.

use serde_json::{Value, json};
use tsm_server::seram_types::*;

// ---- gpseram.yaml `components/examples`, verbatim ----

const HANDSHAKE_REQUEST: &str = r#"{
          "secureElements": [
            {
              "seType": "eSE",
              "seId": "89001012012341234012345678901224",
              "seExtraInfo": "SAM"
            }
          ],
          "supportedTransportProtocols": [ "HTTPS" ],
          "supportedDataFormats": [ "application/json" ],
          "supportedVersion": [ "2.0.0" ]
        }"#;

const HANDSHAKE_RESPONSE: &str = r#"{
          "chosenTransportProtocol": "HTTPS",
          "chosenDataFormat": "application/json",
          "chosenVersion": "2.0.0"
        }"#;

const REMOTE_MANAGEMENT_POLLING: &str = r#"{
          "localAgentStatus": {
            "localAgentStatusEnum": "POLLING",
            "executedSeRamCommands": 0
          }
        }"#;

const APDUS_REMOTE_MANAGEMENT: &str = r#"{
          "localAgentStatus": {
            "localAgentStatusEnum": "PROCESSED",
            "executedSeRamCommands": 2
          },
          "ramResponses": [
            {
              "ramResponseType": "seRamResponse",
              "listOfRAPDU": [ "9000", "9000" ]
            },
            {
              "ramResponseType": "seRamResponse",
              "listOfRAPDU": [ "9000" ]
            }
          ]
        }"#;

const WITHOUT_COMMAND_ORDER: &str = r#"{
          "delay": 500
        }"#;

const START_COMMAND_ORDER: &str = r#"{
          "ramCommands": [
            {
              "ramCommandType": "startCommand"
            }
          ]
        }"#;

const SE_RAM_COMMAND_ORDER: &str = r#"{
          "delay": 100,
          "chosenSecureElement": {
            "seType": "eSE",
            "seId": "89001012012341234012345678901224",
            "seExtraInfo": "SAM"
          },
          "ramCommands": [
            {
              "ramCommandType": "seRamCommand",
              "listOfCAPDU": [ "00A40400OA0001020304050607080900A" ]
            }
          ]
        }"#;

const NOTIFICATION_COMMAND_ORDER: &str = r#"{
          "ramCommands": [
            {
              "ramCommandType": "notificationCommand",
              "deviceAppNotification": "step1/action2/OK"
            }
          ]
        }"#;

const STOP_COMMAND_ORDER: &str = r#"{
          "ramCommands": [
            {
              "ramCommandType": "stopCommand"
            }
          ]
        }"#;

const ALL_COMMANDS_ORDER: &str = r#"{
          "delay": 0,
          "chosenSecureElement": {
            "seType": "eSE",
            "seId": "89001012012341234012345678901224",
            "seExtraInfo": "SAM"
          },
          "ramCommands": [
            {
              "ramCommandType": "startCommand"
            },
            {
              "ramCommandType": "seRamCommand",
              "listOfCAPDU": [ "00A40400OA0001020304050607080900A" ]
            },
            {
              "ramCommandType": "notificationCommand",
              "deviceAppNotification": "step1/action2/OK"
            },
            {
              "ramCommandType": "stopCommand"
            }
          ]
        }"#;

fn example_se() -> SecureElement {
    SecureElement { se_type: SeType::Ese, se_id: "89001012012341234012345678901224".into(), se_extra_info: Some("SAM".into()) }
}

fn order(text: &str) -> RemoteManagementOrder {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("order example does not parse: {e}\n{text}"))
}

#[test]
fn handshake_request_example() {
    let h: HandshakeCommand = serde_json::from_str(HANDSHAKE_REQUEST).unwrap();
    assert_eq!(h.secure_elements, vec![example_se()]);
    assert_eq!(h.supported_transport_protocols, Some(vec!["HTTPS".to_string()]));
    assert_eq!(h.supported_data_formats, Some(vec!["application/json".to_string()]));
    // The example says supportedVersion, the schema supportedVersions.
    assert_eq!(h.supported_versions, Some(vec!["2.0.0".to_string()]));
    // Written back with the schema's name.
    let out = serde_json::to_value(&h).unwrap();
    assert_eq!(out["supportedVersions"], json!(["2.0.0"]));
    assert!(out.get("supportedVersion").is_none());
    assert_eq!(out["secureElements"][0], json!({"seType": "eSE", "seId": "89001012012341234012345678901224", "seExtraInfo": "SAM"}));
}

#[test]
fn handshake_defaults_and_alternative_names() {
    // Only the required property: the defaults of the description apply.
    let h: HandshakeCommand = serde_json::from_value(json!({"secureElements": [{"seType": "UICC", "seId": "1"}]})).unwrap();
    assert_eq!(h.supported_versions, None);
    assert_eq!(h.versions(), vec!["2.0.0"]);
    assert_eq!(h.transport_protocols(), vec!["HTTPS"]);
    assert_eq!(h.data_formats(), vec!["application/json"]);
    assert_eq!(h.secure_elements[0].se_type, SeType::Uicc);
    // The singular names of the description, single strings, both spellings at once.
    let h: HandshakeCommand = serde_json::from_value(json!({
        "secureElements": [],
        "supportedTransportProtocol": "HTTPS",
        "supportedDataFormat": "application/json",
        "supportedVersion": "2.0.0",
        "supportedVersions": ["2.0.0", "2.1.0"],
    }))
    .unwrap();
    assert_eq!(h.supported_transport_protocols, Some(vec!["HTTPS".to_string()]));
    assert_eq!(h.supported_data_formats, Some(vec!["application/json".to_string()]));
    assert_eq!(h.supported_versions, Some(vec!["2.0.0".to_string(), "2.1.0".to_string()]));
    // What the agent sends.
    let sent = serde_json::to_value(HandshakeCommand::new(vec![SecureElement::new(SeType::Uicc, "CPLC-1")])).unwrap();
    assert_eq!(
        sent,
        json!({
            "secureElements": [{"seType": "uicc", "seId": "CPLC-1"}],
            "supportedTransportProtocols": ["HTTPS"],
            "supportedDataFormats": ["application/json"],
            "supportedVersions": ["2.0.0"],
        })
    );
}

#[test]
fn handshake_response_example_and_required_name() {
    let r: HandshakeResponse = serde_json::from_str(HANDSHAKE_RESPONSE).unwrap();
    assert_eq!(r, HandshakeResponse { chosen_transport_protocol: "HTTPS".into(), chosen_data_format: "application/json".into(), chosen_version: "2.0.0".into() });
    // The `required` list's name.
    let r: HandshakeResponse =
        serde_json::from_value(json!({"chosenTransportProtocol": "HTTPS", "chosenDataProtocol": "application/json", "chosenVersion": "2.0.0"})).unwrap();
    assert_eq!(r.chosen_data_format, "application/json");
    // Written with both names, and it reads back (no duplicate-field error).
    let out = serde_json::to_value(&r).unwrap();
    assert_eq!(out["chosenDataFormat"], "application/json");
    assert_eq!(out["chosenDataProtocol"], "application/json");
    assert_eq!(serde_json::from_value::<HandshakeResponse>(out).unwrap(), r);
}

#[test]
fn polling_report_example() {
    let r: RemoteManagementReport = serde_json::from_str(REMOTE_MANAGEMENT_POLLING).unwrap();
    assert_eq!(r, RemoteManagementReport::polling());
    // Our polling report is the example, byte for byte in meaning.
    let ours = serde_json::to_value(RemoteManagementReport::polling()).unwrap();
    assert_eq!(ours, serde_json::from_str::<Value>(REMOTE_MANAGEMENT_POLLING).unwrap());
}

#[test]
fn apdus_report_example() {
    let r: RemoteManagementReport = serde_json::from_str(APDUS_REMOTE_MANAGEMENT).unwrap();
    assert_eq!(*r.status(), LocalAgentStatusEnum::Processed);
    assert_eq!(r.executed(), 2);
    assert_eq!(r.ram_responses.len(), 2);
    assert_eq!(r.ram_responses[0].rapdus().unwrap(), &[HexApdu::from_text("9000"), HexApdu::from_text("9000")]);
    assert_eq!(r.ram_responses[1].rapdus().unwrap(), &[HexApdu::from_text("9000")]);
    let ours = RemoteManagementReport::processed(2, vec![RamResponse::se_ram([[0x90, 0x00], [0x90, 0x00]]), RamResponse::se_ram([[0x90, 0x00]])]);
    assert_eq!(serde_json::to_value(&ours).unwrap(), serde_json::from_str::<Value>(APDUS_REMOTE_MANAGEMENT).unwrap());
    assert_eq!(ours, r);
}

#[test]
fn void_order_example() {
    let o = order(WITHOUT_COMMAND_ORDER);
    assert!(o.is_void());
    assert_eq!(o.delay, Some(500));
    assert_eq!(o.pause(DEFAULT_PAUSE), std::time::Duration::from_millis(500));
    // No delay: the binding's 1 s pause (not the schema's default of 100).
    assert_eq!(order("{}").pause(DEFAULT_PAUSE), std::time::Duration::from_secs(1));
    assert_eq!(serde_json::to_value(RemoteManagementOrder::void(Some(500))).unwrap(), json!({"delay": 500}));
}

#[test]
fn start_and_stop_examples_and_schema_names() {
    assert_eq!(order(START_COMMAND_ORDER).ram_commands, vec![RamCommand::Start]);
    assert_eq!(order(STOP_COMMAND_ORDER).ram_commands, vec![RamCommand::Stop]);
    // The discriminator mapping's names, and any letter case.
    let o: RemoteManagementOrder =
        serde_json::from_value(json!({"ramCommands": [{"ramCommandType": "ramStartCommand"}, {"ramCommandType": "RAMSTOPCOMMAND"}, {"ramCommandType": "StopCommand"}]}))
            .unwrap();
    assert_eq!(o.ram_commands, vec![RamCommand::Start, RamCommand::Stop, RamCommand::Stop]);
    // Written with the mapping's names.
    let out = serde_json::to_value(RemoteManagementOrder::commands(vec![RamCommand::Start, RamCommand::Stop])).unwrap();
    assert_eq!(out, json!({"delay": 0, "ramCommands": [{"ramCommandType": "ramStartCommand"}, {"ramCommandType": "ramStopCommand"}]}));
}

#[test]
fn se_ram_example_with_its_non_hex_apdu() {
    let o = order(SE_RAM_COMMAND_ORDER);
    assert_eq!(o.delay, Some(100));
    assert_eq!(o.chosen_secure_element, Some(example_se()));
    assert_eq!(o.se_ram_count(), 1);
    let RamCommand::SeRam { list_of_capdu } = &o.ram_commands[0] else { panic!("{:?}", o.ram_commands) };
    // The example's APDU has a letter O and an odd length: kept as text, refused on decode.
    assert_eq!(list_of_capdu[0].as_str(), "00A40400OA0001020304050607080900A");
    assert!(list_of_capdu[0].decode().is_err());
    assert!(!list_of_capdu[0].is_canonical());
    // The schema's own listOfCAPDU example is fine.
    let good = HexApdu::from_text("00A4040008A00000015100000000");
    assert_eq!(good.decode().unwrap()[..5], [0x00, 0xA4, 0x04, 0x00, 0x08]);
    assert!(good.is_canonical());
    // Round trip.
    let back: RemoteManagementOrder = serde_json::from_value(serde_json::to_value(&o).unwrap()).unwrap();
    assert_eq!(back, o);
}

#[test]
fn notification_example() {
    let o = order(NOTIFICATION_COMMAND_ORDER);
    assert_eq!(o.ram_commands, vec![RamCommand::notification("step1/action2/OK")]);
    assert_eq!(
        serde_json::to_value(&o).unwrap(),
        json!({"ramCommands": [{"ramCommandType": "notificationCommand", "deviceAppNotification": "step1/action2/OK"}]})
    );
}

#[test]
fn all_commands_example() {
    let o = order(ALL_COMMANDS_ORDER);
    assert_eq!(o.delay, Some(0));
    assert_eq!(o.pause(DEFAULT_PAUSE), std::time::Duration::ZERO);
    assert_eq!(o.chosen_secure_element, Some(example_se()));
    assert_eq!(
        o.ram_commands,
        vec![
            RamCommand::Start,
            RamCommand::SeRam { list_of_capdu: vec![HexApdu::from_text("00A40400OA0001020304050607080900A")] },
            RamCommand::notification("step1/action2/OK"),
            RamCommand::Stop,
        ]
    );
}

#[test]
fn status_values_and_typo() {
    for (text, v) in [
        ("PROCESSED", LocalAgentStatusEnum::Processed),
        ("POLLING", LocalAgentStatusEnum::Polling),
        ("UNAVAILABLE_SE", LocalAgentStatusEnum::UnavailableSe),
        ("UNKNOWN_FAILURE", LocalAgentStatusEnum::UnknownFailure),
        ("UNGRANTED_ACCESS", LocalAgentStatusEnum::UngrantedAccess),
        // The errorMsg description's spelling.
        ("UNGRANDED_ACCESS", LocalAgentStatusEnum::UngrantedAccess),
        ("processed", LocalAgentStatusEnum::Processed),
    ] {
        assert_eq!(serde_json::from_value::<LocalAgentStatusEnum>(json!(text)).unwrap(), v, "{text}");
    }
    assert_eq!(serde_json::to_value(LocalAgentStatusEnum::UngrantedAccess).unwrap(), json!("UNGRANTED_ACCESS"));
    assert_eq!(serde_json::from_value::<LocalAgentStatusEnum>(json!("BUSY")).unwrap(), LocalAgentStatusEnum::Other("BUSY".into()));
    assert!(LocalAgentStatusEnum::UnavailableSe.is_error() && !LocalAgentStatusEnum::Polling.is_error());
    let failed = RemoteManagementReport::failed(LocalAgentStatusEnum::UnavailableSe, 1, vec![RamResponse::se_ram([[0x90u8, 0x00]])], "card removed");
    assert_eq!(
        serde_json::to_value(&failed).unwrap(),
        json!({
            "localAgentStatus": {"localAgentStatusEnum": "UNAVAILABLE_SE", "executedSeRamCommands": 1, "errorMsg": "card removed"},
            "ramResponses": [{"ramResponseType": "seRamResponse", "listOfRAPDU": ["9000"]}],
        })
    );
    // executedSeRamCommands absent: 0.
    let r: RemoteManagementReport = serde_json::from_value(json!({"localAgentStatus": {"localAgentStatusEnum": "POLLING"}})).unwrap();
    assert_eq!(r.executed(), 0);
}

#[test]
fn se_types() {
    for (text, v) in [("eSE", SeType::Ese), ("iSE", SeType::Ise), ("uicc", SeType::Uicc), ("euicc", SeType::Euicc), ("ieuicc", SeType::Ieuicc), ("undefined", SeType::Undefined)] {
        assert_eq!(SeType::parse(text), v);
        assert_eq!(v.as_str(), text);
        assert_eq!(SeType::parse(&text.to_uppercase()), v);
    }
    assert_eq!(SeType::parse("microSD"), SeType::Other("microSD".into()));
    assert_eq!(serde_json::to_value(SeType::Other("microSD".into())).unwrap(), json!("microSD"));
}

#[test]
fn unknown_commands_and_responses_are_kept() {
    let o: RemoteManagementOrder = serde_json::from_value(json!({
        "ramCommands": [{"ramCommandType": "resetCommand", "coldReset": true}],
    }))
    .unwrap();
    let RamCommand::Other { ram_command_type, properties } = &o.ram_commands[0] else { panic!() };
    assert_eq!(ram_command_type, "resetCommand");
    assert_eq!(properties["coldReset"], json!(true));
    assert_eq!(serde_json::to_value(&o).unwrap(), json!({"ramCommands": [{"ramCommandType": "resetCommand", "coldReset": true}]}));
    let r: RamResponse = serde_json::from_value(json!({"ramResponseType": "x", "y": 1})).unwrap();
    assert_eq!(r.type_name(), "x");
    assert!(r.rapdus().is_none());
}

#[test]
fn tolerant_and_strict_where_it_matters() {
    // Property names in another letter case, delay as a string or negative, ramCommands null.
    let o: RemoteManagementOrder =
        serde_json::from_value(json!({"delay": "250", "ramCommands": [{"ramCommandType": "SERAMCOMMAND", "listOfCApdu": ["00a4040000"]}]})).unwrap();
    assert_eq!(o.delay, Some(250));
    let RamCommand::SeRam { list_of_capdu } = &o.ram_commands[0] else { panic!() };
    assert_eq!(list_of_capdu[0].decode().unwrap(), vec![0x00, 0xA4, 0x04, 0x00, 0x00]);
    assert_eq!(serde_json::from_value::<RemoteManagementOrder>(json!({"delay": -5, "ramCommands": null})).unwrap(), RemoteManagementOrder::void(Some(0)));
    // What cannot be executed is an error naming what is missing.
    let e = serde_json::from_value::<RamCommand>(json!({"ramCommandType": "seRamCommand"})).unwrap_err();
    assert!(e.to_string().contains("listOfCAPDU"), "{e}");
    let e = serde_json::from_value::<RamCommand>(json!({"ramCommandType": "notificationCommand", "deviceAppNotification": 3})).unwrap_err();
    assert!(e.to_string().contains("deviceAppNotification"), "{e}");
    let e = serde_json::from_value::<RamCommand>(json!({"listOfCAPDU": []})).unwrap_err();
    assert!(e.to_string().contains("ramCommandType"), "{e}");
    // Unknown top-level properties are ignored.
    assert!(serde_json::from_value::<RemoteManagementOrder>(json!({"future": 1})).unwrap().is_void());
}

#[test]
fn hex_apdu_from_bytes_is_upper_case() {
    let a = HexApdu::from_bytes(&[0x9f, 0x7f, 0x2a, 0x90, 0x00]);
    assert_eq!(a.as_str(), "9F7F2A9000");
    assert!(a.is_canonical());
    assert!(HexApdu::from_bytes(&[]).is_empty());
    assert_eq!(serde_json::to_value(&a).unwrap(), json!("9F7F2A9000"));
}
